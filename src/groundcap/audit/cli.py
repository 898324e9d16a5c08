"""``groundcap audit``: export a sample for people to review, import what they decided."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from groundcap import params as params_mod

audit_app = typer.Typer(
    help="Human-sampled audits: `export` a stratified sample (HTML gallery + Label Studio tasks), "
    "review it, `import` the verdicts; `build` refuses a release whose audited error rate is too high.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Root = Annotated[Path, typer.Option("--root", help="Project folder holding work/, reports/ and release/.")]
ParamsFile = Annotated[
    Optional[Path],
    typer.Option("--params", help="YAML overriding the defaults (default: ROOT/params.yaml if present)."),
]


def _params(root: Path, params_file: Optional[Path]) -> dict:
    if params_file is None and (root / "params.yaml").is_file():
        params_file = root / "params.yaml"
    return params_mod.load(params_file)


def _guard(fn):
    """Run ``fn``, turning the errors a user can fix into one red line and exit code 2 (as every command does)."""
    from groundcap.cli import _USER_ERRORS, _fail  # imported late: the main cli imports this module

    try:
        return fn()
    except _USER_ERRORS as exc:
        _fail(exc)


@audit_app.command("export")
def export_command(
    root: Root = Path("."),
    params_file: ParamsFile = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder to write (default: ROOT/audit).")] = None,
    sample_size: Annotated[
        Optional[int], typer.Option("--sample-size", min=1, help="Images to sample (default: audit.sample_size).")
    ] = None,
    image_url_prefix: Annotated[
        Optional[str],
        typer.Option("--image-url-prefix", help="Prefix of the image URLs in tasks.json (default: Label Studio "
                                                "local-files storage serving ROOT/audit/images/)."),
    ] = None,
) -> None:
    """Write a stratified sample as gallery.html, Label Studio tasks.json + labeling_config.xml, and verdicts.csv."""
    from groundcap import audit

    def run() -> dict:
        prefix = image_url_prefix if image_url_prefix is not None else audit.labelstudio.DEFAULT_URL_PREFIX
        return audit.export(root, _params(root, params_file), out, sample_size, prefix)

    manifest = _guard(run)
    folder = out if out is not None else root / audit.sample.DEFAULT_DIR
    typer.echo(f"sampled {len(manifest['items'])} images from {len(manifest['allocation'])} strata into {folder}")
    typer.echo(f"review {folder / 'gallery.html'} (fill in verdicts.csv) or import tasks.json into Label Studio, "
               "then run `groundcap audit import FILE`")


@audit_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Label Studio JSON export, or a CSV item_id,verdict,corrected_caption.")],
    root: Root = Path("."),
    params_file: ParamsFile = None,
    fmt: Annotated[str, typer.Option("--format", help="auto | label-studio | csv (auto: .csv is csv).")] = "auto",
    manifest: Annotated[
        Optional[Path],
        typer.Option("--manifest", help="manifest.json of the export (default: ROOT/audit/manifest.json)."),
    ] = None,
) -> None:
    """Merge the verdicts into audit.verdicts, write reports/audit.json and show the error rates and the gate."""
    from groundcap.audit import sample, verdicts

    def run() -> tuple[dict, verdicts.GateResult]:
        params = _params(root, params_file)
        exported = sample.read_manifest(manifest or root / sample.DEFAULT_DIR / sample.MANIFEST)
        summary = verdicts.import_file(root, params, file, fmt, exported)
        return summary, verdicts.gate(root, params)

    summary, gate = _guard(run)
    typer.echo(f"imported {summary['imported']} verdicts; {summary['audited']} audited images in all "
               f"({summary['stale']} stale), {summary['errors']} rejected or edited")
    for name, s in summary["strata"].items():
        if s["audited"]:
            typer.echo(f"  {name}: {s['errors']}/{s['audited']} errors (population {s['population']}), "
                       f"Wilson {s['wilson'][0]:.1%}-{s['wilson'][1]:.1%}")
    typer.echo(gate.message)
