"""Release records as Arrow columns: the stage tables of a part joined by arrays, no row dicts.

A *batch* is a table in ``BATCH`` (one row per released image, its kept regions already carrying their
captions, and a ``split`` column); every release format is written from batches (``ParquetShards``,
``WebDatasetShards``, ``CocoJson`` take ``add_table``). ``join_part`` builds one from part ``k`` of
work/ingest, segment, caption_regions, qa, split and redact (the image bytes are redact's blurred copy
where it made one, else ingest's; an image whose privacy pass failed is never released unblurred):
regions are flattened to one array per field,
the kept ones (QA passed, image released) picked by ``take``, their captions found by a sorted
``(image, region_id)`` key, and the list column rebuilt from offsets. Only images that people
corrected (``audit.verdicts.human_test``) go through Python, one image at a time; the entities people
drew join their image's regions there, with ``source: human``.

``default_table`` and ``regions_table`` turn a batch into the two Parquet configs' tables: the regions
config holds no pixels, only its image's id and size, taken by each region's image index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from groundcap import grounding, masks
from groundcap.errors import AuditError, ReleaseError, StageInputError
from groundcap.sources.reference import resolve
from groundcap.storage.parts import part_path

# groundcap.schema's, repeated so that a build worker does not import datasets (0.7 s) to write a
# file (tests/test_builders.py checks they are equal)
RLE = pa.struct([("size", pa.list_(pa.int32(), 2)), ("counts", pa.string())])
BBOX = pa.list_(pa.float64(), 4)
PANCAP_TEXT = "scene_caption_boxes"
HUMAN = "human"  # the source of a region a person drew in the audit (audit.verdicts)

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
REDACTION = pa.struct([("label", pa.string()), ("score", pa.float64()), ("bbox", BBOX), ("detector", pa.string())])
REGION = pa.struct([
    ("region_id", pa.int32()),
    ("bbox", BBOX),  # float64 as the stages measured it: the JSON formats carry it as it is
    ("area", pa.int64()),
    ("segmentation", RLE),
    ("label", pa.string()),
    ("granularity", pa.string()),
    ("parent_id", pa.int32()),
    ("source", pa.string()),
    ("short_caption", pa.string()),
    ("detailed_caption", pa.string()),
])
BATCH = pa.schema([
    ("split", pa.string()),
    ("image_id", pa.string()),
    ("image", IMAGE_STRUCT),
    ("format", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("regions", pa.list_(REGION)),
    ("scene_caption", pa.string()),
    ("qa_score", pa.float64()),
    ("redactions", pa.list_(REDACTION)),
    ("source_path", pa.string()),  # the image's name in its source (release.images: reference keeps it)
    ("license", pa.string()),  # the image's licence as its source states it (null: none stated); the COCO files name it
])
ORIGIN = pa.struct([("kind", pa.string()), ("path", pa.string()), ("sha256", pa.string()), ("size", pa.int64())])
REGION_KEYS = tuple(REGION.field(i).name for i in range(REGION.num_fields))

INPUTS = {  # stage -> the columns build reads
    "ingest": ["image_id", "source_path", "format", "width", "height", "bytes", "reference", "license"],
    "segment": ["image_id", "regions"],
    "caption_regions": ["image_id", "captions"],
    "qa": ["image_id", "score", "regions", "scene_caption"],
    "split": ["image_id", "split"],
    "redact": ["image_id", "bytes", "format", "redactions", "error"],
}


def _array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One array (``combine_chunks`` copies even a single chunk: 29 MB of image bytes a build)."""
    if not isinstance(column, pa.ChunkedArray):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _read(path: Path, columns: list[str]) -> pa.Table:
    """``columns`` of one Parquet file (``ParquetFile``: ``read_table``'s dataset layer cost 0.5 ms a file; it
    leaves a missing column out where ``read_table`` refused, so it is checked here)."""
    with pq.ParquetFile(path) as file:
        missing = [name for name in columns if name not in file.schema_arrow.names]
        if missing:
            raise StageInputError(f"{path} has no column {', '.join(missing)}: it was written by another version of "
                                  "its stage; rerun that stage")
        return file.read(columns=columns)


def _keys(lists: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """``(image index << 32 | region_id)`` of every element of a list<struct{region_id, ...}> array,
    and the flattened elements."""
    parent = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    flat = lists.flatten()
    rid = pc.fill_null(pc.struct_field(flat, "region_id"), 0).to_numpy().astype(np.int64)
    return (parent << 32) | (rid & 0xFFFFFFFF), flat


def join_part(work: Path, index: int, corrections: Mapping[str, dict] | None = None) -> pa.Table:
    """The ``BATCH`` table of part ``index`` of ``work/`` (the released images, in part order)."""
    work = Path(work)
    t = {stage: _read(part_path(work / stage, index), cols) for stage, cols in INPUTS.items()}
    n = t["ingest"].num_rows
    ids = _array(t["ingest"]["image_id"])
    for stage, table in t.items():
        if table.num_rows != n or not table["image_id"].equals(t["ingest"]["image_id"]):
            raise ValueError(f"part {index} of work/{stage} does not hold the images of work/ingest's, in order")
    split = _array(t["split"]["split"])
    rel = np.flatnonzero(pc.is_valid(split).to_numpy(zero_copy_only=False))

    seg_keys, seg = _keys(_array(t["segment"]["regions"]))
    qa_keys, qa_flat = _keys(_array(t["qa"]["regions"]))
    passed = pc.fill_null(pc.struct_field(qa_flat, "passed"), False).to_numpy(zero_copy_only=False)
    released = np.zeros(n, dtype=bool)
    released[rel] = True
    keep = np.isin(seg_keys, qa_keys[passed]) & released[seg_keys >> 32]
    sel = np.flatnonzero(keep)

    cap_keys, cap = _keys(_array(t["caption_regions"]["captions"]))
    order = np.argsort(cap_keys, kind="stable")
    sorted_keys = cap_keys[order]
    wanted = seg_keys[sel]
    pos = np.searchsorted(sorted_keys, wanted, side="right") - 1  # the last caption of a region wins
    found = (pos >= 0) & (sorted_keys[np.maximum(pos, 0)] == wanted)
    if not found.all():
        miss = int(np.flatnonzero(~found)[0])
        raise KeyError(f"region {int(wanted[miss] & 0xFFFFFFFF)} of {ids[int(wanted[miss] >> 32)]} has no caption")
    cap_take = pa.array(order[pos])

    regions = seg.take(pa.array(sel))
    short = pc.struct_field(cap, "short").take(cap_take)
    detailed = pc.struct_field(cap, "detailed").take(cap_take)
    scene = _array(t["qa"]["scene_caption"])
    image_of = (wanted >> 32).astype(np.int64)  # image index of every kept region
    if corrections:
        regions, short, detailed, scene, image_of = _correct(ids, image_of, regions, short, detailed, scene,
                                                             corrections, rel, qa_keys[passed])
    fields = [pc.struct_field(regions, key) for key in REGION_KEYS[:-2]] + [short, detailed]
    values = pa.StructArray.from_arrays(fields, fields=list(REGION))
    counts = np.bincount(image_of, minlength=n)[rel]
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    take = pa.array(rel)
    data, fmt = _released_bytes(t["ingest"], t["redact"], ids, take, work.parent)
    image = pa.StructArray.from_arrays([data, pa.nulls(len(rel), pa.string())], fields=list(IMAGE_STRUCT))
    return pa.Table.from_arrays([
        split.take(take),
        ids.take(take),
        image,
        fmt,
        _array(t["ingest"]["width"]).take(take),
        _array(t["ingest"]["height"]).take(take),
        pa.ListArray.from_arrays(offsets, values, type=BATCH.field("regions").type),
        scene.take(take),
        _array(t["qa"]["score"]).take(take),
        _array(t["redact"]["redactions"]).take(take),
        _array(t["ingest"]["source_path"]).take(take),
        _array(t["ingest"]["license"]).take(take),
    ], schema=BATCH)


def _released_bytes(ingest: pa.Table, redact: pa.Table, ids: pa.Array, take: pa.Array,
                    root: Path) -> tuple[pa.Array, pa.Array]:
    """The image bytes and format of the released rows ``take``: redact's blurred PNG where it made one,
    else ingest's (read from the source, ``root`` the run's folder, where ingest kept a reference: only the
    released images without a redacted copy are read); a ReleaseError when the privacy pass failed on one of them."""
    errors = _array(redact["error"]).take(take)
    if errors.null_count < len(errors):
        failed = [(i, e) for i, e in zip(ids.take(take).to_pylist(), errors.to_pylist(), strict=True) if e is not None]
        image_id, error = failed[0]
        raise ReleaseError(f"{len(failed)} released image(s) failed the privacy pass, e.g. {image_id}: {error}; an "
                           "image is never released unblurred: rerun `groundcap redact` (it retries them), or fix or "
                           "remove the file and rerun from ingest")
    blurred = _array(redact["bytes"]).take(take)
    swap = pc.is_valid(blurred)
    own = ingest.select(["image_id", "bytes", "reference"]).take(take)
    refs = _array(own["reference"])
    own = own.set_column(1, "bytes", pc.coalesce(blurred, _array(own["bytes"])))
    own = own.set_column(2, "reference", pc.if_else(swap, pa.nulls(len(refs), refs.type), refs))  # not read
    return (_array(resolve(own, root)["bytes"]),
            pc.if_else(swap, _array(redact["format"]).take(take), _array(ingest["format"]).take(take)))


def _correct(ids, image_of, regions, short, detailed, scene, corrections, rel, passed_keys):
    """People's captions, labels and repainted masks in place of the machine's, and the entities they drew
    (``source: human``) after each image's regions, for the released images they corrected."""
    id_list = ids.to_pylist()
    fixed_rows = [i for i in rel.tolist() if id_list[i] in corrections]
    if not fixed_rows:
        return regions, short, detailed, scene, image_of
    short, detailed, scene = short.to_pylist(), detailed.to_pylist(), scene.to_pylist()
    rows = regions.to_pylist()
    rows = [{**row, "short": s, "detailed": d} for row, s, d in zip(rows, short, detailed, strict=True)]
    image_of = image_of.tolist()
    for i in fixed_rows:
        fixed = corrections[id_list[i]] or {}
        mine = [k for k, owner in enumerate(image_of) if owner == i]
        for k in mine:
            fix = (fixed.get("regions") or {}).get(rows[k]["region_id"]) or {}
            rows[k].update({key: fix[key] for key in ("short", "detailed", "label") if fix.get(key)})
            if fix.get("segmentation"):  # the mask, and the box and area that follow from it
                rle = fix["segmentation"]
                rows[k].update(segmentation=rle, bbox=masks.bbox(rle), area=masks.area(rle))
        added = [{**dict.fromkeys(f.name for f in regions.type),
                  "region_id": a["region_id"], "segmentation": a["segmentation"], "bbox": masks.bbox(a["segmentation"]),
                  "area": masks.area(a["segmentation"]), "label": a["label"], "source": HUMAN,
                  "short": a["short"], "detailed": a["detailed"]} for a in fixed.get("added") or []]
        at = (mine[-1] + 1) if mine else sum(owner < i for owner in image_of)
        rows[at:at] = added
        image_of[at:at] = [i] * len(added)
        kept = {int(k & 0xFFFFFFFF) for k in passed_keys[(passed_keys >> 32) == i].tolist()}
        kept = {k - (1 << 32) if k >= 1 << 31 else k for k in kept} | {a["region_id"] for a in added}
        scene[i] = _scene(id_list[i], scene[i], fixed.get("scene_caption"), kept)
    short = pa.array([row.pop("short") for row in rows], pa.string())
    detailed = pa.array([row.pop("detailed") for row in rows], pa.string())
    return (pa.array(rows, type=regions.type), short, detailed, pa.array(scene, pa.string()),
            np.asarray(image_of, dtype=np.int64))


def _scene(image_id: str, machine: str, fixed: str | None, kept: set[int]) -> str:
    """The corrected scene caption when people gave one; it must point only at released regions."""
    if not fixed:
        return machine
    refs = {rid for rid, _ in grounding.references(fixed)}
    if not grounding.is_well_formed(fixed) or not refs <= kept:
        raise AuditError(f"the audited scene caption of {image_id} has malformed references or points at "
                         f"regions not in the release ({sorted(refs - kept)}); fix it in the verdicts file")
    return fixed


def from_records(split: str, records: list[dict]) -> pa.Table:
    """A batch of image records (dicts as ``stages.build.records`` yields them); regions are projected
    onto the release fields, so a missing one fails here rather than becoming a silent null."""
    rows = [{
        "split": split,
        "image_id": r["image_id"],
        "image": {"bytes": r["image"]["bytes"], "path": None},  # only bytes travel, never a local path
        "format": r["format"],
        "width": r["width"],
        "height": r["height"],
        "regions": [{key: region[key] for key in REGION_KEYS} for region in r["regions"]],
        "scene_caption": r["scene_caption"],
        "qa_score": r["qa_score"],
        "redactions": r["redactions"],
        "source_path": r.get("source_path"),  # only a reference release needs it (default_table checks)
        "license": r.get("license"),
    } for r in records]
    return pa.Table.from_pylist(rows, schema=BATCH)


def to_records(batch: pa.Table) -> list[tuple[str, dict]]:
    """``(split, record)`` of every row of a batch (for callers that want dicts; not the build's path)."""
    return [(row.pop("split"), row) for row in batch.to_pylist()]


def default_table(batch: pa.Table, schema: pa.Schema, origin_kind: str | None = None) -> pa.Table:
    """The ``default`` config's rows of a batch, in ``schema`` (with the Pancap-style column when the
    schema has it; with ``origin`` in place of the image when it has that: ``origin_kind`` is the source's kind)."""
    columns = {
        "image_id": batch["image_id"],
        "image": batch["image"],
        "width": batch["width"],
        "height": batch["height"],
        "regions": _array(batch["regions"]).cast(schema.field("regions").type),
        "scene_caption": batch["scene_caption"],
        "qa_score": batch["qa_score"].cast(pa.float32()),
        "redactions": _array(batch["redactions"]).cast(schema.field("redactions").type),
    }
    if PANCAP_TEXT in schema.names:
        columns[PANCAP_TEXT] = pancap_text(batch)
    if "origin" in schema.names:
        columns["origin"] = origins(batch, origin_kind)
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)


def origins(batch: pa.Table, kind: str) -> pa.Array:
    """What identifies each image in its source, and the SHA-256 and size of its released bytes (what
    ``groundcap hydrate`` must produce again from the user's copy of the source)."""
    paths = batch["source_path"].to_pylist()
    if None in paths:
        raise ReleaseError(f"image {batch['image_id'][paths.index(None)]} has no source path: a reference release "
                           "names every image in its source (release.images: reference)")
    data = _array(batch["image"]).field("bytes").to_pylist()
    return pa.StructArray.from_arrays([
        pa.array([kind] * len(paths), pa.string()), pa.array(paths, pa.string()),
        pa.array([hashlib.sha256(b).hexdigest() for b in data], pa.string()),
        pa.array([len(b) for b in data], pa.int64()),
    ], fields=list(ORIGIN))


def pancap_text(batch: pa.Table) -> pa.Array:
    """The scene caption of every row with each grounded phrase followed by its 0-1 box."""
    regions = _array(batch["regions"])
    flat = regions.flatten()
    offsets = regions.offsets.to_numpy()
    offsets = offsets - offsets[0]
    rids = pc.struct_field(flat, "region_id").to_numpy(zero_copy_only=False).tolist()
    bboxes = np.asarray(pc.list_flatten(pc.struct_field(flat, "bbox")).to_numpy(zero_copy_only=False)).reshape(-1, 4)
    per_region = np.diff(offsets)
    labels = grounding.box_labels(bboxes, np.repeat(batch["width"].to_numpy(), per_region),
                                  np.repeat(batch["height"].to_numpy(), per_region))
    out = []
    for i, text in enumerate(batch["scene_caption"].to_pylist()):
        a, b = offsets[i], offsets[i + 1]
        out.append(grounding.render_labels(text, dict(zip(rids[a:b], labels[a:b], strict=True))))
    return pa.array(out, pa.string())


def regions_table(default: pa.Table, schema: pa.Schema) -> pa.Table:
    """The ``regions`` config's rows (one per region) from the ``default`` config's table: the image's
    id, size and QA score are taken by each region's image index (never its bytes), the region fields are
    the flattened list."""
    regions = _array(default["regions"])
    parent = pc.list_parent_indices(regions)
    flat = regions.flatten()
    columns = {name: default[name].take(parent) for name in ("image_id", "width", "height", "qa_score")}
    for i in range(flat.type.num_fields):
        columns[flat.type.field(i).name] = pc.struct_field(flat, i)
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)
