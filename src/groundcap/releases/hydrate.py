"""``groundcap hydrate``: a reference release (``release.images: reference``) made whole again from the
user's own copy of its source.

A reference release names each image in its source (``origin``: the source's kind, the entry's name
there, the SHA-256 and size of the bytes an embedded release holds) instead of holding it. Hydrate
streams the source (any kind ``sources.iter_source`` reads), picks the entries the release names, and
replays on each what the build did: ingest's validation and normalization (``ingest.validate``, with the
build's limits from ``data/hydrate.json``), then the privacy pass from the recorded boxes (blur and
metadata strip, ``privacy.released``). The ingested bytes must hash to the image's id and the released
ones to the recorded SHA-256 and size, or the image is *changed*; an entry the source lacks is *missing*. One image
is in memory at a time (beside the release's index: names, ids and hashes, no pixels); accepted bytes wait
in a hidden spool folder inside the output, and writing holds a row group at most, as build does. Any missing or
changed image stops hydrate before a release file is written, each named with its reason: nothing is
substituted.

Then the release is written as the embedded build of the same run writes it: ``data/`` (and ``wds/``
where the build opted in) through ``ReleaseWriter`` with the recorded params, from the recorded rows
in their order, so the files are byte for byte the embedded build's. ``regions/`` and ``coco/`` hold no
image byte and are copied, as are the plots, changelog, card and Croissant (whose declared ``default``
features and sizes become those of the hydrated files); ``checksums.json`` is written again.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from groundcap import privacy
from groundcap.builders.checksums import MANIFEST, write_manifest
from groundcap.builders.columns import BATCH, IMAGE_STRUCT
from groundcap.builders.writer import SPLITS, HydrateInfo, ReleaseWriter
from groundcap.errors import ReleaseError
from groundcap.ingest import Limits, Rejected, image_id, validate
from groundcap.sources import Refused, SourcePolicy, iter_source

SHOWN = 20  # problems listed by name; the rest are counted
_SHARD = re.compile(r"^(?P<split>\w+)-\d{5}-of-\d{5}\.parquet$")
_SPOOL = ".hydrate-spool"


def hydrate(release: str | Path, source: str, out: str | Path, policy: SourcePolicy | None = None) -> list[Path]:
    """Write into ``out`` (new or empty) the image-bearing release of the reference release ``release``,
    its images taken from ``source``; the files written. A ReleaseError names every missing or changed image."""
    release, out = Path(release), Path(out)
    info_path = release / "data" / HydrateInfo.NAME
    if not info_path.is_file():
        raise ReleaseError(f"{release} is not a reference release (no data/{HydrateInfo.NAME}): it holds its images")
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"{out} is not empty: hydrate writes a whole release there")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    spool = out / _SPOOL
    spool.mkdir(parents=True)
    try:
        formats = _fetch(source, _wanted(release), info, spool, policy or SourcePolicy())
        return _write(release, out, info, spool, formats)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _shards(release: Path) -> list[tuple[str, Path]]:
    """``(split, shard)`` of the release's data/, split by split in ``SPLITS`` order, shards in order."""
    found = [(m["split"], p) for p in sorted((release / "data").glob("*.parquet")) if (m := _SHARD.match(p.name))]
    return sorted(found, key=lambda item: (SPLITS.index(item[0]) if item[0] in SPLITS else len(SPLITS), item[1].name))


def _wanted(release: Path) -> dict[str, dict]:
    """The source name of every image -> its id, recorded SHA-256 and size, and the boxes blurred in it."""
    wanted = {}
    for _, shard in _shards(release):
        for row in pq.read_table(shard, columns=["image_id", "origin", "redactions"]).to_pylist():
            boxes = [tuple(int(v) for v in r["bbox"]) for r in row["redactions"]]
            wanted[row["origin"]["path"]] = {"image_id": row["image_id"], "sha256": row["origin"]["sha256"],
                                             "size": row["origin"]["size"], "boxes": boxes}
    return wanted


def _fetch(source: str, wanted: dict[str, dict], info: dict, spool: Path, policy: SourcePolicy) -> dict[str, str]:
    """Each wanted image rebuilt from ``source`` into ``spool/<image_id>``; image_id -> its format."""
    limits, cells = Limits.from_params(info["ingest"]), info["redact"]["cells"]
    formats, problems = {}, {}
    for entry in iter_source(source, policy):
        want = wanted.get(entry.name)
        if want is None or want["image_id"] in formats or entry.name in problems:
            continue
        try:
            record = validate(entry.read(limits.max_bytes + 1), limits)
        except (Refused, OSError) as exc:
            problems[entry.name] = f"unreadable: {exc}"
            continue
        except Rejected as exc:
            problems[entry.name] = f"changed: ingest refuses it now ({exc})"
            continue
        data, fmt = record["bytes"], record["format"]
        if image_id(data) != want["image_id"]:
            problems[entry.name] = f"changed: its pixels are not those of image {want['image_id']}"
            continue
        data, fmt = privacy.released(data, fmt, want["boxes"], cells) or (data, fmt)
        if len(data) != want["size"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
            problems[entry.name] = "changed: the released bytes differ from the recorded SHA-256"
            continue
        (spool / want["image_id"]).write_bytes(data)
        formats[want["image_id"]] = fmt
    found = set(formats)
    problems.update({name: "missing: not in the source" for name, want in wanted.items()
                     if want["image_id"] not in found and name not in problems})
    if problems:
        listed = "\n".join(f"  {name}: {why}" for name, why in sorted(problems.items())[:SHOWN])
        more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise ReleaseError(f"{len(problems)} of {len(wanted)} images cannot be hydrated from {source}; nothing "
                           f"was written:\n{listed}{more}")
    return formats


def _batch(split: str, rows: pa.Table, spool: Path, formats: dict[str, str]) -> pa.Table:
    """The build's batch (``columns.BATCH``) of recorded data/ rows, with the hydrated bytes."""
    ids = rows["image_id"].to_pylist()
    n = len(ids)
    image = pa.StructArray.from_arrays([pa.array([(spool / i).read_bytes() for i in ids], pa.binary()),
                                        pa.nulls(n, pa.string())], fields=list(IMAGE_STRUCT))
    columns = {"split": pa.array([split] * n, pa.string()), "image": image,
               "format": pa.array([formats[i] for i in ids], pa.string()), "source_path": pa.nulls(n, pa.string()),
               "license": pa.nulls(n, pa.string())}  # only the COCO files name it, and hydrate copies those
    return pa.Table.from_arrays([columns[f.name] if f.name in columns else rows[f.name].cast(f.type) for f in BATCH],
                                schema=BATCH)


def _write(release: Path, out: Path, info: dict, spool: Path, formats: dict[str, str]) -> list[Path]:
    from groundcap.dataset_card import croissant
    from groundcap.dataset_card.card import redeclare

    build = info["build"]
    kinds = ("data", "wds") if "webdataset" in build["formats"] else ("data",)
    columns = [name for name in BATCH.names if name not in ("split", "image", "format", "source_path", "license")]
    with ReleaseWriter(out, {"build": build, "release": {"images": "embed"}}, kinds=kinds) as writer:
        for split, shard in _shards(release):
            for rows in pq.ParquetFile(shard).iter_batches(batch_size=16, columns=columns):
                writer.add_table(_batch(split, pa.Table.from_batches([rows]), spool, formats))
    for path in sorted(release.rglob("*")):
        rel = path.relative_to(release)
        if path.is_file() and rel.parts[0] not in (*kinds, MANIFEST) and not rel.name.startswith("."):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out / rel)
    if (out / "README.md").is_file():
        redeclare(out, build, release)
    if (out / croissant.FILENAME).is_file():
        croissant.redeclare(out, build)
    write_manifest(out)
    return sorted(p for p in out.rglob("*") if p.is_file() and _SPOOL not in p.parts)
