"""Every stage table's Arrow schema, declared once (``work/<stage>/part-*.parquet``).

The release's ``datasets.Features`` live apart, in ``builders/features.py``: the stages never import
``datasets``. Boxes are ``[x, y, w, h]`` in pixels; masks are COCO RLE
``{size: [h, w], counts: str}``.
"""

from __future__ import annotations

import pyarrow as pa

PROVENANCE = pa.struct(
    [
        ("backend", pa.string()),
        ("version", pa.string()),
        ("model", pa.string()),
        ("prompt_hash", pa.string()),  # hash of the prompt file, or "" for prompt-less backends
        ("params_hash", pa.string()),  # hash of the params section the stage ran with
    ]
)
RLE = pa.struct([("size", pa.list_(pa.int32(), 2)), ("counts", pa.string())])
BBOX = pa.list_(pa.float64(), 4)

GIVEN = pa.struct(  # a mask the source came with (sources.SourceFile.given), resolved in the segment stage
    [
        ("segmentation", RLE),
        ("label", pa.string()),  # category name (COCO), or "" (SA-1B: class-agnostic)
        ("source", pa.string()),  # the source kind it came from: sa1b | coco
        ("predicted_iou", pa.float64()),
        ("stability_score", pa.float64()),
    ]
)

# where an image's bytes lie on local disk (ingest.images: reference), read back by sources.reference: `path`
# absolute, relative to the run's root, or sample:<file>; `size` bytes from `offset`, with their SHA-256
REFERENCE = pa.struct([("path", pa.string()), ("offset", pa.int64()), ("size", pa.int64()), ("sha256", pa.string())])

IMAGE = pa.schema(
    [
        ("image_id", pa.string()),  # first 16 hex chars of the SHA-256 of the image's bytes
        ("source_path", pa.string()),
        ("format", pa.string()),  # JPEG | PNG, the encoding of the image's bytes
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("bytes", pa.binary()),  # null where `reference` says where they are
        ("reference", REFERENCE),  # null where `bytes` holds them (copy, a remote source, a re-encoded image)
        ("normalized", pa.list_(pa.string())),  # what ingest changed (exif_transpose, to_rgb, ...)
        ("license", pa.string()),  # the image's licence where the source states one (COCO, Hub datasets), else null
        ("given", pa.list_(GIVEN)),  # masks the source came with (SA-1B, COCO); null: the source has none
    ]
)

REJECT = pa.schema([("path", pa.string()), ("stage", pa.string()), ("reason", pa.string())])

TAGS = pa.schema(
    [
        ("image_id", pa.string()),
        ("tags", pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64()), ("source", pa.string())]))),
        (
            "detections",
            pa.list_(
                pa.struct(
                    [
                        ("label", pa.string()),
                        ("score", pa.float64()),
                        ("bbox", BBOX),
                        ("source", pa.string()),
                        ("text", pa.string()),
                    ]
                )
            ),
        ),
        ("provenance", pa.list_(PROVENANCE)),
        ("error", pa.string()),  # set when a backend raised on this image; the image then fails QA
    ]
)

REGION = pa.struct(
    [
        ("region_id", pa.int32()),
        ("segmentation", RLE),
        ("bbox", BBOX),
        ("area", pa.int64()),
        ("label", pa.string()),
        ("label_score", pa.float64()),
        ("source", pa.string()),  # backend that produced the mask
        ("granularity", pa.string()),  # stuff | object | part
        ("parent_id", pa.int32()),
        ("predicted_iou", pa.float64()),
        ("stability_score", pa.float64()),
        ("text", pa.string()),  # OCR text inside the region, if any
    ]
)
REGIONS = pa.schema(
    [
        ("image_id", pa.string()),
        ("regions", pa.list_(REGION)),
        ("provenance", pa.list_(PROVENANCE)),
        ("error", pa.string()),
    ]
)

CAPTION = pa.struct(
    [
        ("region_id", pa.int32()),
        ("short", pa.string()),
        ("detailed", pa.string()),
        ("facts", pa.string()),  # JSON of the measured attributes the caption states
        ("verdict", pa.string()),  # accepted | rejected (by caption_regions.verifier) | unverified
        ("verdict_reason", pa.string()),  # the verifier's reason
        ("unique", pa.bool_()),  # the short caption singles out its region among the image's regions
    ]
)
CAPTIONS = pa.schema(
    [("image_id", pa.string()), ("captions", pa.list_(CAPTION)), ("provenance", pa.list_(PROVENANCE)),
     ("error", pa.string())]
)

SCENE = pa.schema(
    [("image_id", pa.string()), ("scene_caption", pa.string()), ("provenance", pa.list_(PROVENANCE)),
     ("error", pa.string())]
)

SECOND_CAPTION = pa.struct([("region_id", pa.int32()), ("short", pa.string()), ("detailed", pa.string())])
AGREEMENT = pa.struct(  # how far two models' captions of one region (or scene) agree
    [
        ("similarity", pa.float64()),  # cosine of the sentence embeddings of the two captions
        ("claim_agreement", pa.float64()),  # share of comparable claims on which both agree (null: none comparable)
        ("disagreements", pa.list_(pa.string())),  # the claims they contradict each other on
        ("judge", pa.string()),  # accepted | rejected by the judge model, or null when no judge ran
        ("judge_reason", pa.string()),
    ]
)
CROSSCHECK = pa.schema(
    [
        ("image_id", pa.string()),
        ("captions", pa.list_(SECOND_CAPTION)),  # the second model's region captions
        ("regions", pa.list_(pa.struct([("region_id", pa.int32()), ("agreement", AGREEMENT)]))),
        ("scene_caption", pa.string()),  # the second opinion's scene caption
        ("scene", AGREEMENT),
        ("model_a", pa.string()),  # the first model (caption_regions' captioner), as in provenance
        ("model_b", pa.string()),  # the second model
        ("provenance", pa.list_(PROVENANCE)),
        ("error", pa.string()),
    ]
)

CLAIM = pa.struct(  # one claim a caption makes that pixels or the annotations can settle
    [
        ("kind", pa.string()),  # qa.claims.KINDS; label only against the class a source gave (qa.evidence.check_class)
        ("claim", pa.string()),  # the words in the caption
        ("verdict", pa.string()),  # supported | contradicted | unverifiable
        ("detail", pa.string()),  # what was measured
    ]
)
CONSISTENCY = pa.struct(  # the cross-model decision QA took, with its inputs
    [
        ("score", pa.float64()),
        ("passed", pa.bool_()),
        ("similarity", pa.float64()),  # the inputs it was decided on (see AGREEMENT)
        ("claim_agreement", pa.float64()),
        ("model_a", pa.string()),
        ("model_b", pa.string()),
        ("reason", pa.string()),
    ]
)
REGION_QA = pa.struct(
    [
        ("region_id", pa.int32()),
        ("score", pa.float64()),
        ("passed", pa.bool_()),
        ("reasons", pa.list_(pa.string())),
        ("evidence", pa.list_(CLAIM)),
        ("consistency", CONSISTENCY),  # null when the crosscheck stage is off
    ]
)
QA = pa.schema(
    [
        ("image_id", pa.string()),
        ("score", pa.float64()),
        ("passed", pa.bool_()),
        ("reasons", pa.list_(pa.string())),
        ("coverage", pa.float64()),  # share of the pixels the kept entities cover; null when a stage failed
        ("regions", pa.list_(REGION_QA)),
        ("scene_caption", pa.string()),  # scene caption with references to rejected regions unwrapped
        ("scene_evidence", pa.list_(CLAIM)),
        ("scene_consistency", CONSISTENCY),
    ]
)

DEDUP = pa.schema(
    [
        ("image_id", pa.string()),
        ("phash", pa.uint64()),  # 64-bit DCT perceptual hash of the image
        ("pixel_hash", pa.string()),  # SHA-256 of the decoded pixels: same picture, other encoding
        ("image_cluster", pa.string()),  # image_id of the cluster's representative (itself when alone)
        ("caption_cluster", pa.string()),  # same for near-duplicate scene captions
        ("group", pa.string()),  # union of both clusters: the unit the split stage keeps together
        ("kept", pa.bool_()),
        ("reason", pa.string()),  # why an image was not kept (near-duplicate of X), else null
    ]
)

SPLIT = pa.schema(
    [
        ("image_id", pa.string()),
        ("split", pa.string()),  # train | validation | test | human_test, or null: not released
        ("key", pa.float64()),  # the group's hash key the split was cut from
        ("group", pa.string()),  # near-duplicate group (work/dedup): one group, one split
        ("reason", pa.string()),  # why an image is not released, else null
    ]
)

# one box the privacy pass blurred: [x, y, w, h] in whole pixels, padding included; detector: the backend
REDACTION = pa.struct([("label", pa.string()), ("score", pa.float64()), ("bbox", BBOX), ("detector", pa.string())])
REDACT = pa.schema(
    [
        ("image_id", pa.string()),
        ("bytes", pa.binary()),  # the image to release: boxes blurred (PNG) or metadata stripped; null: ingest's as is
        ("format", pa.string()),  # the format of bytes where set, else null
        ("redactions", pa.list_(REDACTION)),
        ("provenance", pa.list_(PROVENANCE)),
        ("error", pa.string()),  # set when detection failed: build refuses to release the image
    ]
)
