"""Stage ``ingest``: source files -> ``work/ingest`` parts + ``reports/rejects.parquet``."""

from __future__ import annotations

import pyarrow as pa
from tqdm.auto import tqdm

from groundcap import ingest, schema
from groundcap.credentials import redact
from groundcap.errors import SourceError
from groundcap.params.validation import Bool, Enum, Int, Num, Protocols
from groundcap.pipeline.stage import Context, Stage
from groundcap.sources import Refused, SourcePolicy, describe, fetch, iter_source
from groundcap.storage import parts


class NoImages(SourceError):
    """Every file of the source was rejected."""


class IngestStage(Stage):
    name = "ingest"
    param_keys = ("source", "part_size", "part_bytes", "ingest")
    outs = ("work/ingest", "reports/rejects.parquet")
    param_types = {"ingest": {
        "min_side": Int(1),
        "max_pixels": Int(1),
        "max_bytes": Int(1),
        "animated": Enum("first_frame", "reject"),
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
                seen[image_id] = name
                batch.append({"image_id": image_id, "source_path": name, "license": item.license, **record})
                batch_bytes += len(record["bytes"])
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
