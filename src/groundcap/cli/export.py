"""``groundcap export``: a built release in another tool's own format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from groundcap.cli.common import Quiet, guard, new_app

export_app = new_app("Load a built release into another tool: `fiftyone` (needs the extra groundcap[fiftyone]).")


@export_app.command("fiftyone")
def fiftyone_command(
    release: Annotated[Path, typer.Argument(help="The release folder (data/*.parquet).")],
    split: Annotated[str | None, typer.Option("--split", help="Only this split (default: every split).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="FiftyOne dataset (default: NAME-VERSION).")] = None,
    media_dir: Annotated[
        Path | None, typer.Option("--media-dir", help="Where the images are written (default: FiftyOne's dataset dir).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a FiftyOne dataset of that name.")] = False,
    quiet: Quiet = False,
) -> None:
    """A persistent FiftyOne dataset: images, regions as Detections with masks and captions, split as tag."""
    from groundcap.export import fiftyone as export

    def run():
        return export.export(release, name, split=split, media_dir=media_dir,
                             overwrite=overwrite, progress=not quiet)

    dataset = guard(run)
    typer.echo(f"FiftyOne dataset {dataset.name!r}: {len(dataset)} samples, "
               f"{dataset.count('regions.detections')} regions; open it with "
               f"`python -c \"import fiftyone as fo; fo.launch_app(fo.load_dataset('{dataset.name}')).wait()\"`")
