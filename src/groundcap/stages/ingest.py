"""Stage ``ingest``: source files -> ``work/ingest`` parts + ``reports/rejects.parquet``.

Under ``ingest.images: reference`` (the default) an image read from local disk and kept as it came is stored as
where it lies (``sources.reference``) instead of a second copy of its bytes; the stages read it from there.

It is also where a release's image licences are first checked, before any model runs: under ``release.images:
embed`` an image whose source states terms that forbid redistribution or derivatives (``licenses.refusal``)
stops the run, unless ``release.license`` overrides what the sources state.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from groundcap import ingest, licenses, schema
from groundcap.credentials import redact
from groundcap.errors import ReleaseError, SourceError
from groundcap.params.validation import Bool, Enum, Int, Num, Protocols
from groundcap.pipeline.stage import Context, Stage
from groundcap.sources import Refused, SourcePolicy, describe, fetch, iter_source, sample
from groundcap.sources.entry import Local
from groundcap.storage import parts


class NoImages(SourceError):
    """Every file of the source was rejected."""


class LicenseRefused(ReleaseError):
    """An embedded release would redistribute or alter an image its source's terms keep from that."""


class IngestStage(Stage):
    name = "ingest"
    param_keys = ("source", "part_size", "part_bytes", "ingest", "release.images", "release.license")
    outs = ("work/ingest", "reports/rejects.parquet")
    param_types = {"ingest": {
        "min_side": Int(1),
        "max_pixels": Int(1),
        "max_bytes": Int(1),
        "animated": Enum("first_frame", "reject"),
        "images": Enum("reference", "copy"),
        "source_policy": {
            "protocols": Protocols(),
            "follow_links": Bool(),
            "file_timeout_s": Num(0, open_low=True),
            "connect_timeout_s": Num(0, open_low=True),
            "read_timeout_s": Num(0, open_low=True),
            "decode_timeout_s": Num(0, open_low=True),
            "workers": Int(1, 64),
        },
    }}

    def check_params(self, params, problems):
        release = params.get("release") or {}
        if release.get("license") and not release.get("license_reason"):
            problems.append("params: release.license overrides the licences the sources state; say why you may "
                            "(release.license_reason: e.g. 'written permission from the rights holders, 2026-11-02'), "
                            "it is recorded in the card")
        if not release.get("license"):
            for key in ("license_name", "license_link", "license_reason"):
                if release.get(key):
                    problems.append(f"params: release.{key} applies only with release.license (an override); "
                                    "without it the card declares what the sources state")

    def run(self, ctx: Context) -> None:
        limits = ingest.Limits.from_params(ctx.params["ingest"])
        policy = SourcePolicy.from_params(ctx.params["ingest"])
        part_size, part_bytes = int(ctx.params["part_size"]), int(ctx.params["part_bytes"])
        listed = iter_source(ctx.params["source"], policy)  # a target the policy refuses stops here, nothing reset
        out = parts.reset_dir(ctx.work("ingest"))
        rejects: list[dict] = []
        seen: dict[str, str] = {}
        batch: list[dict] = []
        index = batch_bytes = 0
        # one byte over max_bytes tells an over-size file without reading it whole
        files = fetch(listed, policy, limits.max_bytes + 1)
        check_terms = ctx.params["release"]["images"] == "embed" and not ctx.params["release"]["license"]
        keep_references = ctx.params["ingest"]["images"] == "reference"
        with ingest.Decoder(limits, policy.decode_timeout_s) as decoder:
            for item, data in tqdm(files, desc="ingest", unit="file", disable=not ctx.progress):
                name = item.name
                try:
                    if isinstance(data, Exception):
                        raise ingest.Rejected(_why(data))
                    record = decoder.validate(data)
                    record["given"] = ingest.check_given(_given(item), record) if item.given else None
                except ingest.Rejected as why:
                    rejects.append(_reject(name, str(why)))
                    continue
                image_id = ingest.image_id(record["bytes"])
                if image_id in seen:
                    rejects.append(_reject(name, f"exact duplicate of {seen[image_id]}"))
                    continue
                if check_terms and (why := licenses.refusal(item.license)):
                    raise LicenseRefused(
                        f"{redact(name)}: its source states {item.license!r}, whose terms {why}, and "
                        "release.images is embed, which puts the image's bytes in the release. Set "
                        "release.images: reference to release the annotations only (each image identified in its "
                        "source, for users to fetch from their own copy), or, if you hold the rights, override "
                        "the sources: release.license (with release.license_reason, recorded in the card)")
                seen[image_id] = name
                size = len(record["bytes"])
                if keep_references and item.local and record["bytes"] == data:  # on local disk, as it came
                    record.update(bytes=None, reference=_reference(item.local, data, ctx.root))
                batch.append({"image_id": image_id, "source_path": name, "license": item.license, **record})
                batch_bytes += size  # the image's own bytes, which every stage reading the part holds
                # by count and by bytes: many small images share a part, large ones never make a huge one
                if len(batch) == part_size or batch_bytes >= part_bytes:
                    parts.write_part(batch, schema.IMAGE, out, index)
                    batch, index, batch_bytes = [], index + 1, 0
        if batch:
            parts.write_part(batch, schema.IMAGE, out, index)
        ctx.reports.mkdir(parents=True, exist_ok=True)
        parts.write_table(pa.Table.from_pylist(rejects, schema=schema.REJECT), ctx.reports / "rejects.parquet")
        if not seen:
            raise NoImages(
                f"no usable image in source {ctx.params['source']!r} ({len(rejects)} rejected); "
                f"see {ctx.reports / 'rejects.parquet'} for the reasons"
            )



def _reference(where: Local, data: bytes, root: Path) -> dict:
    """The ``schema.REFERENCE`` row of ``data``, read from ``where`` (``sources.reference`` reads it back)."""
    return {"path": _location(where, root), "offset": where.offset, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def _location(where: Local, root: Path) -> str:
    """``where``'s path as recorded: an absolute one as it is; a relative one (a source named relative to the folder
    groundcap runs in, as under DVC) relative to ``root`` when inside it, so a clone of the project finds it in its
    own folder, else made absolute; ``sample:<file>`` as it is."""
    if where.path.startswith(sample.PREFIX) or os.path.isabs(where.path):
        return where.path
    path, top = os.path.abspath(where.path), os.path.abspath(root)
    return Path(os.path.relpath(path, top)).as_posix() if os.path.commonpath([path, top]) == top else path


def _why(exc: Exception) -> str:
    """A refused or failed read as a reject reason."""
    return str(exc) if isinstance(exc, Refused) else f"cannot read: {describe(exc)}"


def _reject(name: str, reason: str) -> dict:
    """A rejects row; servers echo request headers into errors, so no credential may pass into it."""
    return {"path": redact(name), "stage": "ingest", "reason": redact(reason)}


def _given(item) -> list[dict]:
    """The source's masks for ``item``; annotations that cannot be read are the image's rejection."""
    try:
        return item.given()
    except Exception as exc:
        raise ingest.Rejected(f"bad given annotations: {type(exc).__name__}: {exc}") from None


STAGE = IngestStage()
