"""SAM 3 through transformers ("sam3"): every instance of each tag's noun phrase, with its mask.

Promptable concept segmentation (``Sam3Model`` / ``Sam3Processor``) finds and segments the tags in one
model, where the detectors and box-prompted SAM take two. The image is encoded once per call; its vision
features are expanded to each chunk of ``prompts_per_batch`` phrases, which go through the text encoder,
DETR and mask decoder as one batch. An instance's score is SAM 3's own (query score times the phrase's
presence score, as ``post_process_instance_segmentation`` computes it). Only kept instances are resized
to full size, one at a time: the processor's post-processing resizes every kept mask at once as int64,
gigabytes at 12 megapixels. Stuff phrases (sky, road, grass) name one region, not instances: their
instances become one "stuff" mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from groundcap import masks
from groundcap.annotators.backends.hf_sam import stability_score
from groundcap.annotators.base import ConceptSegmenter, Mask
from groundcap.annotators.entities import STUFF
from groundcap.annotators.registry import register
from groundcap.models import hub


@register("concept_segmenter", "sam3", needs=("torch", "transformers", "torchvision"), device="gpu",
          description="SAM 3 masks of every instance of each tag (transformers; its processor needs torchvision)")
class Sam3Concepts(ConceptSegmenter):
    """Instances scoring above ``threshold``, at most ``max_instances`` per phrase (a stuff phrase: all of
    them, one region), best first.

    A mask is the processor's: mask probabilities resized bilinearly to full size, above
    ``mask_threshold``. ``stability_score`` is SAM's (``hf_sam.stability_score``) on the low-resolution
    logits; SAM 3 predicts no IoU, so ``predicted_iou`` is None. A phrase longer than the text encoder
    reads (32 tokens) is cut, not refused.
    """

    loads_hub_model = True
    defaults: dict[str, Any] = {
        "device": "auto",
        "dtype": "auto",
        "model": "facebook/sam3",
        "threshold": 0.5,
        "mask_threshold": 0.5,
        "max_instances": 32,
        "prompts_per_batch": 16,
        "stability_offset": 1.0,
        "stuff": sorted(STUFF),
    }

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.hf = hub.Loaded(self.model, "Sam3Model", "Sam3Processor", "Sam3ImageProcessor", self.device, self.dtype,
                             tokenizer=True)

    @hub.inference
    def segment(self, image: np.ndarray, phrases: list[str]) -> list[Mask]:
        phrases = list(dict.fromkeys(p for p in phrases if p))
        if not phrases:
            return []
        pixels = self.hf.inputs(self.hf.processor(images=Image.fromarray(image), return_tensors="pt"))["pixel_values"]
        vision = self.hf.model.get_vision_features(pixel_values=pixels)
        out: list[Mask] = []
        for chunk in hub.batches(phrases, self.prompts_per_batch):
            n = len(chunk)
            # the processor pads the text to 32 tokens without truncating: one longer phrase made the batch ragged
            text = self.hf.processor.tokenizer(list(chunk), padding="max_length", max_length=32, truncation=True,
                                               return_tensors="pt")
            result = self.hf.model(
                vision_embeds=type(vision)(
                    fpn_hidden_states=tuple(h.expand(n, -1, -1, -1) for h in vision.fpn_hidden_states),
                    fpn_position_encoding=tuple(p.expand(n, -1, -1, -1) for p in vision.fpn_position_encoding)),
                **self.hf.inputs(text))
            scores = result.pred_logits.float().sigmoid() * result.presence_logits.float().sigmoid()
            for i, phrase in enumerate(chunk):
                out += self._masks(phrase, scores[i], result.pred_masks[i].float(), image.shape[:2])
        return out

    def _masks(self, phrase: str, scores, logits, size: tuple[int, int]) -> list[Mask]:
        """The instances of one phrase (queries by score, ties by index), or one stuff mask of them all."""
        import torch

        stuff = phrase in self.stuff
        order = [int(q) for q in torch.sort(-scores, stable=True).indices if scores[q] > self.threshold]
        found = []
        for q in order if stuff else order[: self.max_instances]:
            probability = torch.nn.functional.interpolate(logits[q].sigmoid()[None, None], size=size, mode="bilinear",
                                                          align_corners=False)[0, 0]
            binary = (probability > self.mask_threshold).cpu().numpy()
            if binary.any():
                stability = float(stability_score(logits[q], self.stability_offset))
                found.append(Mask(masks.encode(binary), phrase, float(scores[q]), self.name, "object", None, None,
                                  stability))
        if not stuff or not found:
            return found
        return [Mask(masks.union([m.rle for m in found]), phrase, found[0].score, self.name, "stuff", None, None,
                     min(m.stability_score for m in found))]
