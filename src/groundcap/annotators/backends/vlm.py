"""VLM backends (InternVL2.5, Qwen2.5-VL, ...): region captions, caption verification and grounded
scene captions, served by any engine of ``groundcap.vlm`` (vLLM offline, an OpenAI-compatible
endpoint, or transformers ``generate``).

The seeds' three steps, model-agnostic: the crop gives a short caption; the whole image with the
region outlined (a drawn contour or box as visual prompt) plus the short caption gives the detailed
caption; a second model (``vlm`` verifier, another model id) accepts or rejects it with a reason.
Replies are JSON, parsed and repaired by ``vlm.structured``; a reply still unusable after
``max_attempts`` becomes a recorded rejection, never a silent drop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, ClassVar

import cv2
import numpy as np

from groundcap import grounding, masks, prompts
from groundcap.annotators import divide, marks
from groundcap.annotators.base import (
    RegionCaption,
    RegionCaptioner,
    SceneCaption,
    SceneCaptioner,
    Verdict,
    Verifier,
    crop,
)
from groundcap.annotators.entities import parent_name
from groundcap.annotators.registry import register
from groundcap.qa import evidence
from groundcap.vlm import chat as vlm_chat
from groundcap.vlm import structured
from groundcap.vlm.chat import ChatRequest

VLM_OPTIONS: dict[str, Any] = {
    "engine": "vllm",  # vllm | openai | transformers
    "model": "OpenGVLab/InternVL3-8B-hf",
    "engine_options": {},  # passed to the engine (base_url, tensor_parallel_size, ...)
    "prompts_dir": "",  # a folder whose prompt files override the packaged ones
    "max_attempts": 3,
    "max_tokens": 512,
    "temperature": 0.0,
}


class VlmBackend:
    """What the VLM backends share: the engine, their prompt files, and provenance with the prompts' hash."""

    prompt_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)  # Backend: options checked and set as attributes
        self.prompts = {n: prompts.load(n, self.prompts_dir or None) for n in self.prompt_names}

    @property
    def chat(self) -> vlm_chat.ChatEngine:
        return vlm_chat.engine(self.engine, self.model, self.engine_options)

    def provenance(self) -> dict[str, str]:
        return {**super().provenance(), "model": f"{self.model} ({self.engine})",  # type: ignore[misc]
                "prompt_hash": prompts.combined_hash(list(self.prompts.values()))}

    @classmethod
    def fingerprint(cls, options: dict[str, Any]) -> dict[str, str]:
        folder = options.get("prompts_dir") or None
        return {**super().fingerprint(options),  # type: ignore[misc]
                "prompt_hash": prompts.combined_hash([prompts.load(n, folder) for n in cls.prompt_names])}

    @classmethod
    def hub_models(cls, options: dict[str, Any]) -> list[str]:
        merged = {**cls.defaults, **options}  # type: ignore[attr-defined]
        return [] if merged["engine"] == "openai" else [str(merged["model"])]  # a served model is the server's

    @classmethod
    def requires(cls, options: dict[str, Any]) -> tuple[str, ...]:
        engine = {**cls.defaults, **options}["engine"]  # type: ignore[attr-defined]
        return {"vllm": ("vllm",), "transformers": ("torch", "transformers")}.get(engine, ())

    @classmethod
    def uses_gpu(cls, options: dict[str, Any]) -> bool:
        return {**cls.defaults, **options}["engine"] != "openai"  # type: ignore[attr-defined]  # served elsewhere

    @classmethod
    def engine_key(cls, options: dict[str, Any]) -> tuple[str, str]:
        """The ``groundcap.models`` key of the engine these options load (without loading it)."""
        merged = {**cls.defaults, **options}  # type: ignore[attr-defined]
        return vlm_chat.engine_key(merged["engine"], merged["model"], merged["engine_options"])

    def request(self, prompt: str, *images: np.ndarray, schema: dict[str, Any] | None = None) -> ChatRequest:
        """A JSON request; ``schema`` (the shape the prompt asks for) lets engines that decode under
        constraints (vLLM) hold the reply to it."""
        return ChatRequest(prompt, images, max_tokens=self.max_tokens, temperature=self.temperature, json_mode=True,
                           json_schema=schema)

    def ask(self, requests: list[ChatRequest], validate) -> list[structured.Answer]:
        return structured.ask(self.chat, requests, validate, max_attempts=self.max_attempts)

    def view(self, image: np.ndarray) -> np.ndarray:
        """``image`` as the engine will send it (downscaled to its ``max_image_side``), the one copy per image
        that ``highlight`` outlines each region on: a full-size copy per region is 36 MB at 12 MP."""
        return vlm_chat.downscale(image, self.chat.max_image_side)

    def outline(self, image: np.ndarray, view: np.ndarray, region: dict) -> np.ndarray:
        """``region`` of ``image`` outlined (option ``highlight``: contour or box) on ``view``, a copy of it."""
        return highlight(view, region, self.highlight, image.shape[:2])  # type: ignore[attr-defined]


def text_schema(key: str) -> dict[str, Any]:
    """The JSON schema of ``{"<key>": "<text>"}``, the reply ``text_field(key)`` accepts."""
    return {"type": "object", "properties": {key: {"type": "string", "minLength": 1}}, "required": [key]}


VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["verdict", "reason"],
    "properties": {"verdict": {"enum": ["accept", "reject"]}, "reason": {"type": "string"}},
}


def text_field(key: str):
    """A validator: the reply is an object with a non-empty string ``key``; returns it stripped."""

    def validate(obj: Any) -> str:
        structured.require(obj, **{key: str})
        if not obj[key].strip():
            raise ValueError(f"{key!r} is empty")
        return obj[key].strip()

    return validate


def highlight(image: np.ndarray, region: dict, style: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A copy of ``image`` with the region outlined in red: its mask contour, or its box. ``image`` may be a
    downscaled copy of the ``size`` (h, w) image the region is in (``VlmBackend.view``): the outline is found at
    full size and its points scaled onto the copy, so a region costs one small copy, not a full-size one."""
    out = image.copy()
    thickness = max(2, round(max(image.shape[:2]) / 250))
    h, w = size or image.shape[:2]
    scale = (image.shape[1] / w, image.shape[0] / h)
    if style == "box":
        x, y, bw, bh = (round(v) for v in region["bbox"])
        outline = [marks.scaled([[x, y], [x + bw - 1, y], [x + bw - 1, y + bh - 1], [x, y + bh - 1]], scale)]
    else:
        outline = marks.contours(masks.decode(region["segmentation"]), scale)
    cv2.polylines(out, outline, True, (255, 0, 0), thickness)
    return out


@register("region_captioner", "vlm", device="gpu",
          description="VLM: crop -> short caption, outlined region -> detailed caption")
class VlmCaptioner(VlmBackend, RegionCaptioner):
    defaults = {**VLM_OPTIONS, "crop_pad": 0.1, "highlight": "contour"}
    prompt_names = ("region_short", "region_detailed", "region_refine", "label_detected", "label_given")

    def caption(self, image: np.ndarray, regions: list[dict]) -> list[RegionCaption]:
        return self.caption_batch([(image, regions)])[0]

    def caption_batch(self, items: list[tuple[np.ndarray, list[dict]]]) -> list[list[RegionCaption]]:
        """Every region's short caption in one engine call, then every detailed caption in one more."""
        views = [self.view(image) for image, _ in items]
        flat = [(image, view, r) for (image, regions), view in zip(items, views, strict=True) for r in regions]
        part_of = [_part_of(r, regions) for _, regions in items for r in regions]
        shorts = self.ask(
            [self.request(self.prompts["region_short"].render(label_note=self.label_note(r), part_of=p),
                          crop(image, tuple(r["bbox"]), self.crop_pad), schema=text_schema("short"))
             for (image, _, r), p in zip(flat, part_of, strict=True)],
            text_field("short"),
        )
        captions = iter(self._detail(flat, [a.value for a in shorts], [a.error for a in shorts], part_of))
        return [[next(captions) for _ in regions] for _, regions in items]

    def refine(self, image, regions, captions, clashes):
        by_id = {c.region_id: c for c in captions}
        todo = [r for r in regions if r["region_id"] in clashes]
        view = self.view(image)
        answers = self.ask(
            [self.request(self.prompts["region_refine"].render(
                short=by_id[r["region_id"]].short,
                others="; ".join(json.dumps(by_id[o].short) for o in clashes[r["region_id"]])),
                self.outline(image, view, r), schema=text_schema("short")) for r in todo],
            text_field("short"),
        )
        refined = dict(zip((r["region_id"] for r in todo), self._detail(
            [(image, view, r) for r in todo],
            [a.value or by_id[r["region_id"]].short for a, r in zip(answers, todo, strict=True)],
            [None] * len(todo), [_part_of(r, regions) for r in todo]), strict=True))
        return [refined.get(c.region_id, c) for c in captions]

    def label_note(self, region: dict) -> str:
        """What the short prompt says of the region's label: the class its source gave is its name (DLC-SDP
        stage 1); a detector's label is a hint that may be wrong."""
        given = evidence.given_class(region)
        note = self.prompts["label_given"].render(label=given) if given else \
            self.prompts["label_detected"].render(label=region.get("label") or "")
        return note.strip()

    def class_note(self, region: dict) -> str:
        """The given class for the detailed prompt (after its first sentence), or nothing."""
        given = evidence.given_class(region)
        return " " + self.prompts["label_given"].render(label=given).strip() if given else ""

    def _detail(self, flat: list[tuple[np.ndarray, np.ndarray, dict]], shorts, errors, part_of) -> list[RegionCaption]:
        """Detailed captions of (image, its ``view``, region) given their short captions, in one engine call."""
        asked = [i for i, s in enumerate(shorts) if s]
        answers = self.ask(
            [self.request(self.prompts["region_detailed"].render(short=shorts[i], part_of=part_of[i],
                                                                 class_note=self.class_note(flat[i][2])),
                          self.outline(*flat[i]), schema=text_schema("detailed")) for i in asked],
            text_field("detailed"),
        )
        detailed = dict(zip(asked, answers, strict=True))
        out = []
        for i, (_, _, region) in enumerate(flat):
            answer = detailed.get(i)
            error = errors[i] or (answer.error if answer else None)
            facts = {"model": self.model, **({"error": error} if error else {})}
            out.append(RegionCaption(int(region["region_id"]), shorts[i] or "",
                                     (answer.value if answer else None) or "", facts))
        return out


def _part_of(region: dict, regions: list[dict]) -> str:
    """The prompts' sentence that names a part's whole (empty for an entity): its captions must say it."""
    parent = parent_name(region, regions)
    return "" if parent is None else (f'This region is a part of the "{parent}": say whose part it is '
                                      f'(e.g. "the handle of the {parent}"). ')


@register("verifier", "vlm_verifier", device="gpu",
          description="A second VLM accepts or rejects each detailed caption, with its reason")
class VlmVerifier(VlmBackend, Verifier):
    defaults = {**VLM_OPTIONS, "model": "Qwen/Qwen2.5-VL-7B-Instruct", "highlight": "contour"}
    prompt_names = ("verify_region",)

    def verify(self, image: np.ndarray, regions: list[dict], captions: list[RegionCaption]) -> list[Verdict]:
        return self.verify_batch([(image, regions, captions)])[0]

    def verify_batch(self, items):
        """Every caption of every image judged in one engine call."""
        flat = []
        for image, regions, captions in items:
            by_id, view = {r["region_id"]: r for r in regions}, self.view(image)
            flat += [(image, view, by_id[c.region_id], c) for c in captions]
        answers = self.ask(
            [self.request(self.prompts["verify_region"].render(detailed=c.detailed),
                          self.outline(image, view, region), schema=VERDICT_SCHEMA)
             for image, view, region, c in flat],
            _verdict,
        )
        out, start = [], 0
        for _, _, captions in items:
            mine, start = answers[start:start + len(captions)], start + len(captions)
            out.append([Verdict(c.region_id, *(a.value if a.value else (False, f"verifier gave no verdict: {a.error}")))
                        for c, a in zip(captions, mine, strict=True)])
        return out


def _verdict(obj: Any) -> tuple[bool, str]:
    structured.require(obj, verdict=str, reason=str)
    verdict = obj["verdict"].strip().lower()
    if verdict not in ("accept", "reject"):
        raise ValueError(f"verdict {obj['verdict']!r} is neither accept nor reject")
    return verdict == "accept", obj["reason"].strip()


@register("scene_captioner", "vlm", device="gpu",
          description="VLM grounded scene caption over the five Pancap dimensions, divided and fused when regions "
                      "are many")
class VlmComposer(VlmBackend, SceneCaptioner):
    defaults = {**VLM_OPTIONS, "max_regions": 40, "divide_above": 0, "max_tokens": 1024}
    prompt_names = ("scene", "scene_fuse")

    def compose(self, image: np.ndarray, regions: list[dict], captions: list[RegionCaption]) -> SceneCaption:
        [scene] = self.compose_batch([(image, regions, captions)])
        if isinstance(scene, Exception):
            raise scene
        return scene

    def compose_batch(self, items):
        """Every part of every image in one engine call, then every fuse in one more; an image whose
        caption is rejected gets that error. Each request carries the image (or its part) with the regions
        it lists outlined and numbered (``annotators.marks``), and their short and detailed captions."""
        plans = []  # per image: (image, its captions by region id, its parts)
        for image, regions, captions in items:
            h, w = image.shape[:2]
            said = {c.region_id: c for c in captions if c.short}
            named = [r for r in regions if r["region_id"] in said]
            limit = self.divide_above if self.divide_above > 0 else len(named)
            # no captioned region: still one request for the whole photo (regions "(none)"), never a fuse of nothing
            parts = divide.split(named, w, h, limit) or [divide.Part("whole image", (0, 0, w, h), [])]
            plans.append((image, said, [(p, self._listed(p)) for p in parts]))
        flat = [(image, said, part, chosen) for image, said, parts in plans for part, chosen in parts]
        answers = iter(self.ask([self._part_request(image, part, chosen, said) for image, said, part, chosen in flat],
                                [_grounded(set(said)) for _, said, _, _ in flat]))
        out: list[SceneCaption | Exception | None] = []
        fuses = {}  # item index -> fuse request, validator
        for k, (image, said, parts) in enumerate(plans):
            got = [next(answers) for _ in parts]
            failed = [f"{p.name}: {a.error}" for (p, _), a in zip(parts, got, strict=True) if a.value is None]
            if failed:
                out.append(RuntimeError(f"scene caption rejected ({'; '.join(failed)})"))
            elif len(parts) == 1:
                out.append(SceneCaption(got[0].value))
            else:
                pieces = "\n".join(f"[{p.name}] {a.value}" for (p, _), a in zip(parts, got, strict=True))
                kept = {i for a in got for i, _ in grounding.references(a.value)}
                shown = marks.draw(self.view(image), [r for _, chosen in parts for r in chosen])
                fuses[k] = (self.request(self.prompts["scene_fuse"].render(parts=pieces), shown,
                                         schema=text_schema("caption")), _grounded(set(said), keep=kept),
                            len(parts))
                out.append(None)
        fused = self.ask([request for request, _, _ in fuses.values()], [check for _, check, _ in fuses.values()])
        for (k, (_, _, n)), answer in zip(fuses.items(), fused, strict=True):
            out[k] = SceneCaption(answer.value) if answer.value is not None else \
                RuntimeError(f"scene caption rejected (fusing {n} parts: {answer.error})")
        return out

    def _listed(self, part: divide.Part) -> list[dict]:
        """The regions a part's request lists and marks: at most ``max_regions``, the largest first."""
        chosen = sorted(part.regions, key=lambda r: (-int(r["area"]), r["region_id"]))[: self.max_regions]
        return sorted(chosen, key=lambda r: r["region_id"])

    def _part_request(self, image: np.ndarray, part: divide.Part, chosen: list[dict],
                      said: dict[int, RegionCaption]) -> ChatRequest:
        x, y, w, h = part.box
        lines = []
        for r in chosen:
            bx, by, bw, bh = r["bbox"]
            box = [round(min(max((v - o) / s, 0.0), 1.0), 3)
                   for v, o, s in ((bx, x, w), (by, y, h), (bx + bw, x, w), (by + bh, y, h))]
            caption = said[r["region_id"]]
            lines.append(f"- r{r['region_id']} {box}: {_one_line(caption.short)}")
            if caption.detailed:
                lines.append(f"  detail: {_one_line(caption.detailed)}")
        view = "the whole photo" if part.name == "whole image" else f"the {part.name} of a larger photo"
        prompt = self.prompts["scene"].render(view=view, regions="\n".join(lines) or "(none)")
        shown = marks.draw(self.view(image[y:y + h, x:x + w]), chosen, part.box)
        return self.request(prompt, shown, schema=text_schema("caption"))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _grounded(allowed: set[int], keep: Iterable[int] = ()):
    """A validator: a well-formed grounded caption that still references every id in ``keep`` (a fuse must
    not lose a region its parts named); references to ids not offered are unwrapped."""

    def validate(obj: Any) -> str:
        text = text_field("caption")(obj)
        if not grounding.is_well_formed(text):
            raise ValueError("caption has malformed region tags")
        lost = set(keep) - {i for i, _ in grounding.references(text)}
        if lost:
            raise ValueError(f"the fused caption dropped {', '.join(f'<r{i}>' for i in sorted(lost))}")
        return grounding.unwrap(text, allowed)

    return validate
