"""Tiny random-weight transformers checkpoints, built and saved locally (there is no model hub here).

Each ``build_*`` writes a folder laid out like the hub checkpoint it stands for (config and weights,
the image processor's ``preprocessor_config.json``, the tokenizer files), so the backends load it
through the real ``from_pretrained`` path. Sizes follow transformers' own model tests, with the
processors' image sizes shrunk to match: random weights make the outputs meaningless, but their
shapes, order and bookkeeping are what the backends' tests check.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import torch
import transformers as tf

LETTERS = string.ascii_lowercase + string.digits + ".,'-"


def clip_tokenizer(max_length: int) -> tf.CLIPTokenizer:
    """CLIP's byte-level BPE with no merges: one token per character, enough for any lower-case label.

    The special tokens come last, as in CLIP's real vocabulary: OWLv2 drops a query whose first
    token id is 0.
    """
    tokens = [c for ch in LETTERS for c in (ch, ch + "</w>")] + ["<|startoftext|>", "<|endoftext|>"]
    return tf.CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=max_length)


def clip_text(tokenizer: tf.CLIPTokenizer, max_length: int) -> dict:
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    return {"vocab_size": len(tokenizer), "max_position_embeddings": max_length, **ids}


def bert_tokenizer(words: list[str]) -> tf.BertTokenizer:
    """A WordPiece vocabulary with BERT's special-token ids (Grounding DINO hard-codes 101, 102, 1012, 1029)."""
    vocab = {f"[unused{i}]": i for i in range(1030)}
    for token, i in {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}.items():
        vocab.pop(f"[unused{i}]")
        vocab[token] = i
    for word in dict.fromkeys(w for text in words for w in re.findall(r"\w+|[^\w\s]", text.lower())):
        vocab.setdefault(word, len(vocab))  # BERT splits punctuation off: "t-shirt" is t, -, shirt
    return tf.BertTokenizer(vocab=vocab, model_max_length=256)


def save(folder: Path, model, image_processor, tokenizer=None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return str(folder)


def _two_tower(text_config: dict, vision_config: dict) -> dict:
    """OWLv2's class head wants the projection as wide as the text tower: every width is 32."""
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    return {"text_config": {**small, **text_config}, "vision_config": {**small, **vision_config}, "projection_dim": 32}


def build_clip(folder: Path, text_len: int = 64) -> str:
    """``text_len``: the tokens its text tower reads (bench/gpu.py passes the real checkpoint's 77)."""
    torch.manual_seed(0)
    tokenizer = clip_tokenizer(text_len)
    config = tf.CLIPConfig(**_two_tower(clip_text(tokenizer, text_len), {"image_size": 32, "patch_size": 8}))
    processor = tf.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return save(folder, tf.CLIPModel(config).eval(), processor, tokenizer)


def build_owlv2(folder: Path, text_len: int = 32) -> str:
    """``text_len``: the tokens its text tower reads (bench/gpu.py passes the real checkpoint's 16)."""
    torch.manual_seed(0)
    tokenizer = clip_tokenizer(text_len)
    config = tf.Owlv2Config(**_two_tower(clip_text(tokenizer, text_len), {"image_size": 32, "patch_size": 8}))
    processor = tf.Owlv2ImageProcessorPil(size={"height": 32, "width": 32})
    model = tf.Owlv2ForObjectDetection(config).eval()
    # its Linear layers start at std initializer_factor (1.0): every box came out as a sigmoid saturated to
    # 0 or 1 (the whole image, or a line); a small last layer keeps boxes near their patch, as trained ones are
    torch.nn.init.normal_(model.box_head.dense2.weight, std=0.02)
    return save(folder, model, processor, tokenizer)


def build_grounding_dino(folder: Path, words: list[str]) -> str:
    torch.manual_seed(0)
    tokenizer = bert_tokenizer(words)
    swin = tf.SwinConfig(window_size=7, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], image_size=64,
                         out_indices=[2, 3, 4])
    bert = {"model_type": "bert", "vocab_size": len(tokenizer), "hidden_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 64}
    config = tf.GroundingDinoConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=8, decoder_ffn_dim=8, num_queries=20, num_feature_levels=4, encoder_n_points=2,
        decoder_n_points=2, backbone_config=swin, text_config=bert, max_text_len=32,
    )
    processor = tf.GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96})
    return save(folder, tf.GroundingDinoForObjectDetection(config).eval(), processor, tokenizer)


def build_sam(folder: Path) -> str:
    """SAM at a 64-pixel input: 8x8 image embeddings, 32x32 low-resolution masks.

    The widths line up as SAM requires: 2 x ``num_pos_feats`` == prompt-encoder hidden size ==
    mask-decoder hidden size == the vision encoder's ``output_channels``.
    """
    torch.manual_seed(0)
    config = tf.SamConfig(
        vision_config=tf.SamVisionConfig(
            image_size=64, patch_size=8, hidden_size=32, output_channels=32, num_hidden_layers=2,
            num_attention_heads=4, mlp_dim=64, window_size=4, global_attn_indexes=[1], num_pos_feats=16,
        ),
        prompt_encoder_config=tf.SamPromptEncoderConfig(image_size=64, patch_size=8, hidden_size=32,
                                                        mask_input_channels=4),
        mask_decoder_config=tf.SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2,
                                                    num_attention_heads=4, iou_head_hidden_dim=32),
    )
    processor = tf.SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                        mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
    return save(folder, tf.SamModel(config).eval(), processor)


def build_sam3(folder: Path) -> str:
    """SAM 3 at a 56-pixel input (4x4 patches of 14): 8 queries, CLIP text tower of 32 tokens, 8x8 masks.

    Widths follow transformers' own ``Sam3ModelTester`` (32 throughout). Its image processor runs on
    torchvision (SAM 3 has no PIL one), so building it needs torchvision, as the backend does.
    """
    from transformers.models.sam3 import configuration_sam3 as c3

    torch.manual_seed(0)
    tokenizer = clip_tokenizer(32)
    small = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}
    backbone = c3.Sam3ViTConfig(**small, num_hidden_layers=2, image_size=56, patch_size=14, window_size=2,
                                global_attn_indexes=[1])
    config = tf.Sam3Config(
        vision_config=c3.Sam3VisionConfig(backbone_config=backbone, fpn_hidden_size=32, scale_factors=[2.0, 1.0]),
        text_config={**clip_text(tokenizer, 32), **small, "projection_dim": 32, "num_hidden_layers": 2},
        geometry_encoder_config=c3.Sam3GeometryEncoderConfig(**small, num_layers=1, mask_fuser_hidden_size=32,
                                                              mask_fuser_num_layers=1),
        detr_encoder_config=c3.Sam3DETREncoderConfig(**small, num_layers=1),
        detr_decoder_config=c3.Sam3DETRDecoderConfig(**small, num_layers=1, num_queries=8),
        mask_decoder_config=c3.Sam3MaskDecoderConfig(hidden_size=32, num_upsampling_stages=2),
    )
    processor = tf.Sam3ImageProcessor(size={"height": 56, "width": 56})
    return save(folder, tf.Sam3Model(config).eval(), processor, tokenizer)
