"""The interfaces of the annotation steps, and the small records they exchange.

One interface per step (docs/ARCHITECTURE.md, "Annotators and backends"). Backends implement one of
them, register under a name (``registry.register``) and are chosen by that name in ``params.yaml``.
Images are HxWx3 uint8 RGB numpy arrays at full resolution; boxes are ``[x, y, w, h]`` in pixels of that image.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from groundcap.errors import ParamsError
from groundcap.masks import Rle


def at_work_side(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """``image`` shrunk (area interpolation) so its longer side is at most ``side``, and the scale applied
    (1.0: ``image`` itself): the CPU backends compute at a fixed size and map their results back."""
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return image, scale
    import cv2

    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA), scale


@dataclass(frozen=True)
class Tag:
    label: str
    score: float
    source: str


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    bbox: tuple[float, float, float, float]
    source: str
    text: str | None = None  # what an OCR detector read in the box


@dataclass(frozen=True)
class Mask:
    """A candidate mask before the entity merge."""

    rle: Rle
    label: str
    score: float
    source: str
    granularity: str = "object"  # stuff | object | part
    text: str | None = None
    predicted_iou: float | None = None
    stability_score: float | None = None
    label_score: float | None = None  # the label's own score where it is not the mask's (a crop tag's)


@dataclass(frozen=True)
class RegionCaption:
    region_id: int
    short: str
    detailed: str
    facts: dict[str, Any] = field(default_factory=dict)  # the measured attributes a caption states


@dataclass(frozen=True)
class SceneCaption:
    text: str  # grounded phrases as <rN>phrase</rN>, N a region_id of the image


class Backend(ABC):  # noqa: B024 - no abstract method of its own: each kind below declares its own
    """Options checked against ``defaults``, and the metadata a backend carries into provenance.

    Each option becomes an attribute, coerced to its default's type (so YAML's ``512`` and ``512.0``
    both work); an option the backend does not declare is an error, so a typo in params.yaml never
    silently runs with the default.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    model: ClassVar[str] = ""  # model id, or a plain description of the algorithm
    defaults: ClassVar[dict[str, Any]] = {}
    data_files: ClassVar[tuple[str, ...]] = ()  # package files it reads (code_deps: their change reruns its stage)
    loads_hub_model: ClassVar[bool] = False  # its ``model`` option is a Hugging Face repo id it downloads

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "(none)"
            raise ParamsError(f"backend {self.name!r} has no option {', '.join(unknown)}; its options: {known}")
        for key, default in self.defaults.items():
            value = options.get(key, default)
            setattr(self, key, value if default is None else type(default)(value))

    def provenance(self) -> dict[str, str]:
        return {"backend": self.name, "version": self.version, "model": self.model}

    @classmethod
    def hub_models(cls, options: dict[str, Any]) -> list[str]:
        """The Hugging Face model ids these options load: ``groundcap doctor`` checks each is in the local
        cache (or a local folder), ``groundcap models fetch`` downloads them."""
        return [str({**cls.defaults, **options}["model"])] if cls.loads_hub_model else []

    @classmethod
    def requires(cls, options: dict[str, Any]) -> tuple[str, ...]:
        """Modules these options need besides the registered ``needs`` (a VLM's engine: vllm, transformers)."""
        return ()

    @classmethod
    def uses_gpu(cls, options: dict[str, Any]) -> bool:
        """Whether these options run a model on this machine's GPU (for a GPU backend; a served one does not)."""
        return True

    @classmethod
    def fingerprint(cls, options: dict[str, Any]) -> dict[str, str]:
        """What, besides its options and code, decides this backend's output (prompts it would read),
        known without building it: building may load a model, and fingerprints are taken before."""
        return {"backend": cls.name, "version": cls.version}


class Tagger(Backend):
    @abstractmethod
    def tag(self, image: np.ndarray) -> list[Tag]: ...

    def tag_batch(self, images: list[np.ndarray]) -> list[list[Tag]]:
        """Tags per image; backends whose model takes a batch override this (same results)."""
        return [self.tag(image) for image in images]

    def tag_crops(self, image: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> list[list[Tag]]:
        """Tags per box crop: names class-agnostic regions (PancapEngine). Backends may batch this."""
        return [self.tag(crop(image, box)) for box in boxes]

    def tag_crops_batch(self, items: list[tuple[np.ndarray, list[tuple[float, float, float, float]]]]
                        ) -> list[list[list[Tag]]]:
        """``tag_crops`` for each (image, boxes); a VLM tagger asks its engine once for every crop."""
        return [self.tag_crops(image, boxes) for image, boxes in items]


class Detector(Backend):
    @abstractmethod
    def detect(self, image: np.ndarray, tags: list[Tag]) -> list[Detection]: ...

    def detect_batch(self, images: list[np.ndarray], tags: list[list[Tag]]) -> list[list[Detection]]:
        """Detections per image (prompted with that image's tags); batching backends override this."""
        return [self.detect(image, image_tags) for image, image_tags in zip(images, tags, strict=True)]


class PromptedSegmenter(Backend):
    @abstractmethod
    def segment(self, image: np.ndarray, detections: list[Detection]) -> list[Mask | None]:
        """One mask per detection, in order; None where the prompt yields no mask."""


class ConceptSegmenter(Backend):
    @abstractmethod
    def segment(self, image: np.ndarray, phrases: list[str]) -> list[Mask]:
        """Every instance of each noun phrase (a tag), each mask labelled with its phrase: detection and
        segmentation in one model (SAM 3), where a ``Detector`` and a ``PromptedSegmenter`` take two."""


class MaskGenerator(Backend):
    @abstractmethod
    def generate(self, image: np.ndarray) -> list[Mask]:
        """Class-agnostic "everything" masks."""


class RegionCaptioner(Backend):
    @abstractmethod
    def caption(self, image: np.ndarray, regions: list[dict]) -> list[RegionCaption]:
        """One caption per region record (schema.REGION), in order."""

    def caption_batch(self, items: list[tuple[np.ndarray, list[dict]]]) -> list[list[RegionCaption]]:
        """``caption`` for each (image, regions); a VLM captioner sends each step's requests of every
        image to its engine at once."""
        return [self.caption(image, regions) for image, regions in items]

    def refine(
        self, image: np.ndarray, regions: list[dict], captions: list[RegionCaption], clashes: dict[int, list[int]]
    ) -> list[RegionCaption]:
        """Captions again, those in ``clashes`` (region_id -> look-alike region ids) made to single
        out their region (``annotators.uniqueness``). A captioner that cannot returns them as they are."""
        return captions


class SceneCaptioner(Backend):
    @abstractmethod
    def compose(self, image: np.ndarray, regions: list[dict], captions: list[RegionCaption]) -> SceneCaption: ...

    def compose_batch(self, items: list[tuple[np.ndarray, list[dict], list[RegionCaption]]]
                      ) -> list[SceneCaption | Exception]:
        """``compose`` for each (image, regions, captions); an image it fails on gets its exception."""
        out: list[SceneCaption | Exception] = []
        for item in items:
            try:
                out.append(self.compose(*item))
            except Exception as exc:  # that image's error (worker.PartWorker records it)
                out.append(exc)
        return out


@dataclass(frozen=True)
class Verdict:
    region_id: int
    accepted: bool
    reason: str  # why the caption was rejected, or what was checked when accepted


class Verifier(Backend):
    """A second opinion on region captions, from another model or from the pixels."""

    @abstractmethod
    def verify(self, image: np.ndarray, regions: list[dict], captions: list[RegionCaption]) -> list[Verdict]:
        """One verdict per caption, in order."""

    def verify_batch(self, items: list[tuple[np.ndarray, list[dict], list[RegionCaption]]]) -> list[list[Verdict]]:
        """``verify`` for each (image, regions, captions); a VLM verifier asks its engine once for all."""
        return [self.verify(*item) for item in items]


def crop(image: np.ndarray, box: tuple[float, float, float, float], pad: float = 0.0) -> np.ndarray:
    """The pixels of ``box`` [x, y, w, h] (grown by ``pad`` of its size each side), at least 1x1."""
    h, w = image.shape[:2]
    x, y, bw, bh = box
    x0, y0 = int(max(0, np.floor(x - pad * bw))), int(max(0, np.floor(y - pad * bh)))
    x1 = int(min(w, max(x0 + 1, np.ceil(x + bw + pad * bw))))
    y1 = int(min(h, max(y0 + 1, np.ceil(y + bh + pad * bh))))
    return image[y0:y1, x0:x1]
