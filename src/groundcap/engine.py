"""Runs a stage's per-image function over Parquet parts: the local executor.

Part ``k`` of each input stage is read together (they hold the same images in the same order), the
function runs once per image, and part ``k`` of the output is written atomically. An exception on
one image becomes that image's ``error`` field instead of ending the run, later stages carry that
error forward, and QA fails the image with it as the reason: one bad sample never costs the others.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from groundcap import parts


@dataclass
class Context:
    """Where a run reads and writes, and the params it runs with."""

    root: Path
    params: dict[str, Any]
    progress: bool = True
    notes: list[str] = field(default_factory=list)

    def work(self, stage: str) -> Path:
        return self.root / "work" / stage

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def release(self) -> Path:
        return self.root / "release"


ImageFn = Callable[..., dict]


def map_images(
    ctx: Context,
    stage: str,
    inputs: Sequence[str],
    fn: ImageFn,
    schema: pa.Schema,
    on_error: Callable[[str, str], dict],
) -> Path:
    """Write ``work/<stage>`` by calling ``fn(*rows)`` for each image across ``inputs``' parts.

    ``rows`` are the image's records from each input stage, in the order of ``inputs``;
    ``on_error(image_id, message)`` builds the row recorded when ``fn`` raises.
    """
    sources = [ctx.work(s) for s in inputs]
    indices = parts.list_parts(sources[0])
    total = sum(pq.ParquetFile(parts.part_path(sources[0], i)).metadata.num_rows for i in indices)
    out = parts.reset_dir(ctx.work(stage))
    with tqdm(total=total, desc=stage, unit="img", disable=not ctx.progress) as bar:
        for index in indices:
            tables = [parts.read_part(src, index) for src in sources]
            rows = []
            for records in zip(*tables, strict=True):
                ids = {r["image_id"] for r in records}
                if len(ids) != 1:
                    raise RuntimeError(f"part {index} of {inputs} is out of step ({sorted(ids)}); rerun from ingest")
                image_id = records[0]["image_id"]
                upstream = next((r["error"] for r in records if r.get("error")), None)
                if upstream:  # an earlier stage already failed on this image: carry its reason
                    rows.append(on_error(image_id, upstream))
                    bar.update(1)
                    continue
                try:
                    rows.append(fn(*records))
                except Exception as exc:  # recorded per image, see module docstring
                    detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
                    rows.append(on_error(image_id, f"{stage}: {detail}"))
                bar.update(1)
            parts.write_part(rows, schema, out, index)
    return out
