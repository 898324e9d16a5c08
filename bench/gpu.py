"""The GPU profile's steps on a GPU, timed: seconds per image and peak GPU memory per step.

    python bench/gpu.py --scale real --out gpu.json   # on one H100/H200, no network (6-8 minutes, an estimate)
    python bench/gpu.py --scale tiny                  # the same code on this CPU with tiny models (a test runs it)

bench/device_check.sh is the prepared run of it on a lent GPU (the carried wheel, a time limit, JSON to $OUT).

There are no weights here and none can be downloaded on the device machine, so each model is built at
its real size from a config written here, with random weights (SAM ViT-H, Grounding DINO base with its
Swin-B backbone, OWLv2 base, CLIP ViT-L/14, and a VLM shaped like Qwen2.5-VL-7B run through
groundcap's ``transformers`` engine), saved with ``save_pretrained`` and loaded back by groundcap's own
backends, as a run would. Random weights make the outputs meaningless but the compute real: the
vision models' cost does not depend on their weights; the VLM is told to write a fixed number of tokens
(``--vlm-tokens``), since a random model's replies never stop by themselves, and its two rounds are
timed apiece, the detailed one sent with a stock short caption (none of a random model's validates).
vLLM does not travel to the device machine (its wheel is too large), so the VLM figures are the
transformers fallback's, an upper bound on what vLLM's batching costs. Tokenizers are tiny (no
vocabulary file can be fetched), so the text towers' embedding tables are smaller than the real ones;
their compute per token is not, and the towers read as many tokens as the real ones (``TEXT_LEN``).

Needs torch, transformers, numpy, Pillow, OpenCV, scikit-image and pycocotools (carried as a wheel to
the device machine), and groundcap on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
import transformers as tf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tiny_hf / tiny_vlm: the local tokenizers and tiny checkpoints

import tiny_hf  # noqa: E402
import tiny_vlm  # noqa: E402
from groundcap import models  # noqa: E402
from groundcap.annotators import registry  # noqa: E402
from groundcap.annotators.base import Detection, Tag  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "hubble_deep_field", "immunohistochemistry",
          "page", "camera", "retina", "horse", "cat")
TAGS = ["person", "cat", "cup", "rocket", "motorcycle", "galaxy", "cell", "text", "camera", "eye", "horse", "dog"]
TEXT_LEN = {"clip": 77, "owlv2": 16}  # the tokens the real checkpoints' text towers read, at both scales


def photos(n: int) -> list[np.ndarray]:
    """The first ``n`` scikit-image sample photos as HxWx3 uint8 (grey ones stacked to RGB)."""
    out = []
    for name in (PHOTOS * (n // len(PHOTOS) + 1))[:n]:
        image = np.asarray(getattr(skimage.data, name)())
        out.append(np.ascontiguousarray(np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]))
    return out


# --- real-size checkpoints (random weights) --------------------------------------------------------

def _dual_encoder(folder: Path, device: str, classes: tuple, text_len: int, text: dict, vision: dict,
                  projection_dim: int) -> str:
    """A CLIP-style text+vision model (``classes``: model, config, image processor) with random weights."""
    model_cls, config_cls, processor_cls = classes
    tok = tiny_hf.clip_tokenizer(text_len)
    text = {**tiny_hf.clip_text(tok, text_len), **text}
    with torch.device(device):  # weights built straight there: a 7B model initialised on the CPU takes minutes
        model = model_cls(config_cls(text_config=text, vision_config=vision, projection_dim=projection_dim))
    return tiny_hf.save(folder, model, processor_cls(), tok)


def real_clip(folder: Path, device: str) -> str:
    return _dual_encoder(
        folder, device, (tf.CLIPModel, tf.CLIPConfig, tf.CLIPImageProcessorPil), TEXT_LEN["clip"],
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
        {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
         "image_size": 224, "patch_size": 14}, 768)


def real_owlv2(folder: Path, device: str) -> str:
    return _dual_encoder(
        folder, device, (tf.Owlv2ForObjectDetection, tf.Owlv2Config, tf.Owlv2ImageProcessorPil),
        TEXT_LEN["owlv2"],
        {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
         "image_size": 960, "patch_size": 16}, 512)


def real_grounding_dino(folder: Path, device: str) -> str:
    tok = tiny_hf.bert_tokenizer(TAGS)
    swin = tf.SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
                         image_size=384, out_indices=[2, 3, 4])
    bert = {"model_type": "bert", "vocab_size": len(tok), "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512}
    config = tf.GroundingDinoConfig(backbone_config=swin, text_config=bert, d_model=256, encoder_layers=6,
                                    decoder_layers=6, num_queries=900, max_text_len=256)
    with torch.device(device):
        model = tf.GroundingDinoForObjectDetection(config)
    return tiny_hf.save(folder, model, tf.GroundingDinoImageProcessorPil(), tok)


def real_sam(folder: Path, device: str) -> str:
    vision = tf.SamVisionConfig(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                                global_attn_indexes=[7, 15, 23, 31], output_channels=256, image_size=1024,
                                patch_size=16, window_size=14, num_pos_feats=128)
    with torch.device(device):
        model = tf.SamModel(tf.SamConfig(vision_config=vision))
    return tiny_hf.save(folder, model, tf.SamImageProcessorPil())


def real_vlm(folder: Path, device: str) -> str:
    """A LLaVA-architecture VLM as large as Qwen2.5-VL-7B's language model (28 layers, 3584 wide, GQA 28/4)
    with a CLIP ViT-L/14-336 vision tower: the compute of a 7B VLM, through a processor built here."""
    tok = tiny_vlm.build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in tiny_vlm.SPECIALS}
    vision = tf.CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
                                 num_hidden_layers=24, num_attention_heads=16)
    text = tf.LlamaConfig(vocab_size=len(tok), hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                          num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=8192,
                          pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"])
    config = tf.LlavaConfig(vision_config=vision, text_config=text, image_token_index=ids["<image>"],
                            image_seq_length=(336 // 14) ** 2, vision_feature_layer=-2)
    with torch.device(device):
        model = tf.LlavaForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    processor = tf.LlavaProcessor(image_processor=LlavaImageProcessorPil(size={"shortest_edge": 336},
                                                                         crop_size={"height": 336, "width": 336}),
                                  tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                                  num_additional_image_tokens=1, chat_template=tiny_vlm.CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return str(folder)


REAL = {"clip": real_clip, "owlv2": real_owlv2, "grounding_dino": real_grounding_dino, "sam": real_sam,
        "vlm": real_vlm}


def tiny(name: str, folder: Path) -> str:
    """The tests' tiny checkpoint of ``name``, its text tower as long as the real one: a label past OWLv2's
    16 tokens fails here as it would on the GPU."""
    if name in TEXT_LEN:
        return getattr(tiny_hf, f"build_{name}")(folder, TEXT_LEN[name])
    if name == "grounding_dino":
        return tiny_hf.build_grounding_dino(folder, TAGS)
    return str(tiny_vlm.build_tiny_vlm(folder)) if name == "vlm" else tiny_hf.build_sam(folder)

# what the detailed round is sent for each region: random weights never write a short caption that validates,
# so without one the captioner would skip that round, the longer of the two (the whole image, outlined)
STOCK_SHORT = "a tabby cat lying on a wooden table"


# --- the steps ------------------------------------------------------------------------------------

def _measured(device: str, work) -> tuple[float, dict]:
    """Seconds that ``work()`` takes, and its peak GPU memory."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    work()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, ({"peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)} if cuda else {})


def _timed(device: str, step, images: list, warmup: int = 1) -> dict:
    """Seconds per image over ``images`` after ``warmup`` images, and the peak GPU memory of the step."""
    for image in images[:warmup]:
        step(image)
    seconds, memory = _measured(device, lambda: [step(image) for image in images])
    return {"s_per_image": round(seconds / len(images), 4), "images": len(images), **memory}


def _caption_rounds(device: str, captioner, images: list, regions: int) -> dict[str, dict]:
    """The region captioner's two rounds over all ``images`` (one engine call each, as a stage sends them),
    timed apiece after a one-image warm-up that loads the model; each figure counts the requests it sent."""
    items = [(image, [_region(image, k) for k in range(regions)]) for image in images]
    captioner.caption_batch(items[:1])
    engine, sent = captioner.chat, []
    generate = engine.generate

    def counted(requests):
        sent.append(len(requests))
        return generate(requests)

    engine.generate = counted
    flat = [(image, captioner.view(image), region) for image, rs in items for region in rs]
    rounds = {"short (crop)": lambda: captioner.caption_batch(items),
              "detailed (outlined image)": lambda: captioner._detail(flat, [STOCK_SHORT] * len(flat),
                                                                      [None] * len(flat), [""] * len(flat))}
    out = {}
    for name, work in rounds.items():
        sent.clear()
        seconds, memory = _measured(device, work)
        out[f"region_captioner vlm, transformers engine: {name} round ({regions} regions)"] = {
            "s_per_image": round(seconds / len(images), 3), "images": len(images), "requests": sum(sent), **memory}
    engine.generate = generate
    return out


def run(scale: str, n: int, vlm_tokens: int, regions: int, out: Path | None = None) -> dict:
    """Each step's figures, its checkpoint built just before it; ``out`` is rewritten after every step, so
    a run stopped by a time limit keeps what it measured."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    images = photos(n)
    tags = [Tag(t, 1.0, "bench") for t in TAGS]
    results: dict = {"scale": scale, "device": torch.cuda.get_device_name() if device == "cuda" else platform.machine(),
                     "torch": torch.__version__, "transformers": tf.__version__, "build_s": {}}

    def record(figures: dict) -> None:
        for name, figure in figures.items():
            results[name] = figure
            print(f"{name}: {figure}", flush=True)
        if out:
            out.write_text(json.dumps(results, indent=1) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        made: dict[str, str] = {}

        def checkpoint(name: str) -> str:
            if name not in made:
                start = time.perf_counter()
                folder = Path(tmp) / name
                made[name] = REAL[name](folder, device) if scale == "real" else tiny(name, folder)
                results["build_s"][name] = round(time.perf_counter() - start, 1)
                torch.cuda.empty_cache() if device == "cuda" else None
            return made[name]

        steps = {
            "tagger clip": (lambda: registry.create("tagger", "clip", {"model": checkpoint("clip")}),
                            lambda b, im: b.tag(im)),
            "detector grounding_dino": (
                lambda: registry.create("detector", "grounding_dino", {"model": checkpoint("grounding_dino")}),
                lambda b, im: b.detect(im, tags)),
            "detector owlv2": (lambda: registry.create("detector", "owlv2", {"model": checkpoint("owlv2")}),
                               lambda b, im: b.detect(im, tags)),
            "prompted_segmenter sam (8 boxes)": (
                lambda: registry.create("prompted_segmenter", "sam", {"model": checkpoint("sam")}),
                lambda b, im: b.segment(im, [Detection("thing", 1.0, _box(im, k), "bench") for k in range(8)])),
            "mask_generator sam_everything": (
                lambda: registry.create("mask_generator", "sam_everything", {
                    "model": checkpoint("sam"), "points_per_side": 32 if scale == "real" else 4}),
                lambda b, im: b.generate(im)),
        }
        for name, (create, step) in steps.items():
            backend = create()
            record({name: _timed(device, lambda im, b=backend, s=step: s(b, im), images)})
            del backend
            models.release()
        captioner = registry.create("region_captioner", "vlm", {
            "engine": "transformers", "model": checkpoint("vlm"), "max_tokens": vlm_tokens, "max_attempts": 1,
            "engine_options": {"batch_size": 16}})
        record(_caption_rounds(device, captioner, images, regions))
        models.release()
    return results


def _box(image: np.ndarray, k: int) -> tuple[float, float, float, float]:
    h, w = image.shape[:2]
    return (w * (k % 4) / 4, h * (k // 4) / 2, w / 4, h / 2)


def _region(image: np.ndarray, k: int) -> dict:
    from groundcap import masks

    x, y, w, h = _box(image, k % 8)
    mask = np.zeros(image.shape[:2], bool)
    mask[int(y):int(y + h), int(x):int(x + w)] = True
    return {"region_id": k, "bbox": [x, y, w, h], "segmentation": masks.encode(mask), "label": "thing",
            "area": int(mask.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=("real", "tiny"), default="real")
    parser.add_argument("--images", type=int, default=12, help="sample photos per step (repeated past 12)")
    parser.add_argument("--regions", type=int, default=16, help="regions captioned per image by the VLM")
    parser.add_argument("--vlm-tokens", type=int, default=48, help="tokens the VLM writes per request")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON, rewritten after every step")
    args = parser.parse_args()
    print(json.dumps(run(args.scale, args.images, args.vlm_tokens, args.regions, args.out), indent=1))


if __name__ == "__main__":
    main()
