"""The release's ``datasets.Features``: the Parquet configs are written with them and the dataset card declares
them, so ``load_dataset`` never has to infer a type. Boxes are ``[x, y, w, h]`` in pixels; masks are COCO RLE
``{size: [h, w], counts: str}`` (the stage tables' Arrow schemas: ``groundcap.schema``)."""

from __future__ import annotations

from datasets import Features, Image, List, Value

SEGMENTATION_FEATURE = {"size": List(Value("int32"), length=2), "counts": Value("string")}
BBOX_FEATURE = List(Value("float32"), length=4)

_REGION_FIELDS = {
    "region_id": Value("int32"),
    "bbox": BBOX_FEATURE,
    "area": Value("int64"),
    "segmentation": SEGMENTATION_FEATURE,
    "label": Value("string"),
    "granularity": Value("string"),
    "parent_id": Value("int32"),  # the entity a part-level region belongs to, else null
    "source": Value("string"),
    "short_caption": Value("string"),
    "detailed_caption": Value("string"),
}

REDACTION_FEATURE = {"label": Value("string"), "score": Value("float32"), "bbox": BBOX_FEATURE,
                     "detector": Value("string")}

IMAGES_FEATURES = Features(
    {
        "image_id": Value("string"),
        "image": Image(),
        "width": Value("int32"),
        "height": Value("int32"),
        "regions": List(_REGION_FIELDS),
        "scene_caption": Value("string"),
        "qa_score": Value("float32"),
        "redactions": List(REDACTION_FEATURE),  # what the privacy pass blurred in `image` (stage redact)
    }
)

# One row per region, annotations only: its image's pixels are in the default config, once
# (``releases.regions.load_regions`` attaches them by image_id).
REGIONS_FEATURES = Features(
    {
        "image_id": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
        **_REGION_FIELDS,
        "qa_score": Value("float32"),
    }
)

PANCAP_TEXT = "scene_caption_boxes"  # the scene caption with Pancap-style inline boxes (build.pancap_text)

# release.images: reference: no pixels; what identifies the image in its source (the source kind, the
# entry's name there: a folder's relative path, a list's line, ``shard.tar/member``, SA-1B's or COCO's file
# name, a Hub dataset's row) and the SHA-256 and size of the bytes an embedded release holds in `image`
ORIGIN_FEATURE = {"kind": Value("string"), "path": Value("string"), "sha256": Value("string"),
                  "size": Value("int64")}


def release_configs(build: dict, images: str = "embed") -> dict[str, Features]:
    """The release's configs and their features under the ``build`` params section and ``release.images``."""
    default = dict(IMAGES_FEATURES)
    if images == "reference":  # the same columns, `origin` in place of `image`
        default = dict(("origin", ORIGIN_FEATURE) if name == "image" else (name, feature)
                       for name, feature in default.items())
    if build.get("pancap_text"):
        default[PANCAP_TEXT] = Value("string")
    return {"default": Features(default), "regions": REGIONS_FEATURES}
