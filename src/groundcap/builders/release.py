"""The build stage's writer: work/ joined part by part, the release folders written in one process or
several.

Each release folder (``KINDS``: regions/, data/, wds/, coco/) is one stream: its files depend only on
the batches it is fed, in part order, so a folder comes out the same bytes whichever process writes
it and however many there are. With ``workers`` > 1 the folders are dealt out to that many processes
(spawn context, at most one per folder); each joins work/ itself (the join is cheap next to writing,
and no image bytes cross a pipe), writes its folders under temporary names and hands the names back.
Nothing is fsynced or renamed until every process has finished (``SplitFiles.publish``, once for every
file of the build): a failure anywhere removes every
temporary file, and a killed build leaves only hidden temporaries, which the next build's writers
clear with their folders. A worker whose parent is gone (the build was killed with SIGKILL) stops at
the next part rather than writing into the folder a new build may be filling.

Shard ranges of one (config, split) are not split across processes: where a Parquet shard closes
depends on the compressed size of the row groups before it (``build.shard_bytes``), so a second
process could not know where its range starts without the first one's bytes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pyarrow as pa

from groundcap.builders.columns import join_part
from groundcap.builders.files import SplitFiles
from groundcap.builders.writer import KINDS, ReleaseWriter
from groundcap.storage import parts


def groups(workers: int) -> list[tuple[str, ...]]:
    """The release folders of each of ``workers`` processes (the costliest folders dealt first)."""
    n = max(1, min(int(workers), len(KINDS)))
    return [KINDS[i::n] for i in range(n)]


def write_release(work: str | Path, release_dir: str | Path, params: dict, corrections: dict | None = None,
                  workers: int = 1, progress: bool = False) -> list[Path]:
    """Write every release format from the stage tables in ``work`` into ``release_dir``; the files."""
    from groundcap.builders.features import release_configs

    configs = release_configs(params["build"], params["release"]["images"])
    schemas = {name: features.arrow_schema for name, features in configs.items()}
    jobs = groups(workers)
    if len(jobs) == 1:
        return SplitFiles.publish(write_kinds(work, release_dir, params, corrections, jobs[0], schemas, progress))
    results, error = [], None
    with ProcessPoolExecutor(len(jobs), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(write_kinds, work, release_dir, params, corrections, kinds, schemas, False, os.getpid())
                   for kinds in jobs]
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others finished
                error = error or exc
    if error is not None:
        for pairs in results:
            for tmp, _ in pairs:
                tmp.unlink(missing_ok=True)
        raise error
    return SplitFiles.publish([pair for pairs in results for pair in pairs])


def write_kinds(work: str | Path, release_dir: str | Path, params: dict, corrections: dict | None,
                kinds: tuple[str, ...], schemas: dict, progress: bool = False,
                parent: int | None = None) -> list[tuple[Path, Path]]:
    """Write the release folders ``kinds`` under temporary names; ``(temporary, final)`` pairs."""
    work = Path(work)
    indices = parts.list_parts(work / "ingest")
    with ThreadPoolExecutor(AHEAD) as reader:
        batches = joined(reader, work, indices, corrections)  # part 0 is read while the writer empties its folders
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=len(indices), desc="build", unit="part")
        writer = ReleaseWriter(release_dir, params, kinds=kinds, schemas=schemas)
        try:
            for batch in batches:
                if parent is not None and os.getppid() != parent:
                    raise SystemExit("the build that started this worker is gone")
                writer.add_table(batch)
            return writer.finish()
        except BaseException:
            writer.abort()
            raise


# parts read and joined ahead of the one being written, each by its own thread: joining reads six tables and the
# images (file reads, SHA-256, Parquet decoding release the GIL), about as long as writing a part, so one thread
# left the writer waiting; two made build about 12% faster on 2 cores (docs/benchmarks.md, "build vs tarfile")
AHEAD = 2


def joined(reader: Executor, work: Path, indices: list[int], corrections: dict | None) -> Iterator[pa.Table]:
    """The joined batch of each part, in order, read and joined by ``reader`` (``AHEAD`` threads) while the caller
    writes the one before: at most ``AHEAD + 1`` parts are in memory. The first parts are submitted at once,
    before the first batch is asked for."""
    futures = deque(reader.submit(join_part, work, i, corrections) for i in indices[:AHEAD])

    def batches() -> Iterator[pa.Table]:
        following = iter(indices[AHEAD:])
        while futures:
            index = next(following, None)
            if index is not None:
                futures.append(reader.submit(join_part, work, index, corrections))
            yield futures.popleft().result()

    return batches()
