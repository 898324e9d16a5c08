"""``groundcap publish``: a built release, checked (``publish.plan``), sent once and for all to the Hub or to a
folder/URL (``publish.hub``, ``publish.folder``).

A published version is immutable: the Hub gets one commit tagged ``v{version}`` (a tag that exists is
never moved), a folder gets ``URL/v{version}/`` (one that is complete is never rewritten). Trainers pin
the tag or the folder, so what they load never changes under them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from groundcap.cli.common import Root, guard
from groundcap.errors import PublishError

if TYPE_CHECKING:
    from groundcap.publish.plan import Plan

Version = Annotated[str, typer.Option(
    "--version", help="The version to publish, X.Y.Z: the one the release was built as (release.version).")]
Repo = Annotated[str | None, typer.Option(
    "--repo", metavar="ORG/NAME",
    help="Hub dataset repo to publish to (created if missing); token from HF_TOKEN or `hf auth login`.")]
To = Annotated[str | None, typer.Option(
    "--to", metavar="URL",
    help="Folder or fsspec URL (/data/releases/x, file://..., s3://bucket/prefix) to publish to, as URL/vX.Y.Z/.")]
Release = Annotated[Path | None, typer.Option("--release", help="The release folder (default: ROOT/release).")]
DryRun = Annotated[bool, typer.Option(
    "--dry-run", help="Check the release, list what would be published and load every config locally; "
    "send and write nothing.")]
Private = Annotated[bool, typer.Option(
    "--private", help="Create the Hub repo private (an existing repo keeps its visibility).")]


def publish(version: Version, repo: Repo = None, to: To = None, release: Release = None, root: Root = Path("."),
            dry_run: DryRun = False, private: Private = False) -> None:
    """Publish a built release as version X.Y.Z to a Hub dataset repo (--repo) or a folder/URL (--to).

    Checked first: the release was built as X.Y.Z and matches its checksums.json and its dataset card.

    Published: exactly the files checksums.json lists, plus checksums.json itself.

    Once per version, never replaced: on the Hub one commit tagged vX.Y.Z (earlier files deleted); else URL/vX.Y.Z/.
    """
    guard(lambda: _publish(version, repo, to, release or root / "release", dry_run, private))


def _publish(version: str, repo: str | None, to: str | None, release: Path, dry_run: bool, private: bool) -> None:
    if (repo is None) == (to is None):
        raise PublishError("give exactly one target: --repo ORG/NAME (a Hub dataset repo) or --to URL (a folder)")
    if repo is not None and repo.count("/") != 1:
        raise PublishError(f"--repo {repo!r} is not ORG/NAME")
    from groundcap.publish.plan import check_release

    plan = check_release(release, version)
    if dry_run:
        _dry_run(plan, repo, to)
    elif repo is not None:
        _to_hub(plan, repo, private)
    else:
        _to_folder(plan, to)


def _dry_run(plan: Plan, repo: str | None, to: str | None) -> None:
    from groundcap.publish.folder import location
    from groundcap.publish.plan import describe, loaded_rows

    target = f"Hub dataset repo {repo} (hf://datasets/{repo}@{plan.tag})" if repo else location(to, plan.tag)
    typer.echo("\n".join(describe(plan, target)))
    for config, splits in loaded_rows(plan).items():
        typer.echo(f"config {config}: " + ", ".join(f"{split} {rows} rows" for split, rows in splits.items()))
    typer.echo("dry run: nothing was sent or written")


def _to_hub(plan: Plan, repo: str, private: bool) -> None:
    from groundcap.publish.hub import publish_hub
    from groundcap.publish.plan import usage

    commit = publish_hub(plan, repo, private)
    _report([f"published {repo} commit {commit}", f"tagged {plan.tag}"], usage(repo, plan, revision=plan.tag))


def _to_folder(plan: Plan, url: str) -> None:
    from groundcap.publish.folder import publish_folder
    from groundcap.publish.plan import usage

    where = publish_folder(plan, url)
    _report([f"published {where}"], usage(where, plan))


def _report(lines: list[str], loads: list[str]) -> None:
    typer.echo("\n".join([*lines, "load it with:", *(f"  {line}" for line in loads)]))
