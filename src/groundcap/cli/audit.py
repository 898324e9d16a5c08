"""``groundcap audit``: export a sample for people to review, import what they decided."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from groundcap.cli.common import ParamsFile, Root, guard, new_app, project_params

audit_app = new_app(
    "Human-sampled audits: `export` a stratified sample (HTML gallery + Label Studio tasks), "
    "review it, `import` the verdicts; `build` refuses a release whose audited error rate is too high."
)


@audit_app.command("export")
def export_command(
    root: Root = Path("."),
    params_file: ParamsFile = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder to write (default: ROOT/audit).")] = None,
    sample_size: Annotated[
        int | None, typer.Option("--sample-size", min=1, help="Images to sample (default: audit.sample_size).")
    ] = None,
    image_url_prefix: Annotated[
        str | None,
        typer.Option("--image-url-prefix", help="Prefix of the image URLs in tasks.json (default: Label Studio "
                                                "local-files storage serving ROOT/audit/images/)."),
    ] = None,
    originals: Annotated[bool, typer.Option(
        "--originals", help="Show the ingested images, faces and plates unblurred (default: the released ones).")
    ] = False,
) -> None:
    """Write a stratified sample as gallery.html, Label Studio tasks.json + labeling_config.xml, and verdicts.csv."""
    from groundcap import audit

    def run() -> dict:
        prefix = image_url_prefix if image_url_prefix is not None else audit.labelstudio.DEFAULT_URL_PREFIX
        return audit.export(root, project_params(root, params_file), out, sample_size, prefix, originals)

    manifest = guard(run)
    folder = out if out is not None else root / audit.sample.DEFAULT_DIR
    failed = sum(not item["qa_passed"] for item in manifest["items"])
    typer.echo(f"sampled {len(manifest['items'])} images ({failed} of them QA-failed, for the false-rejection rate) "
               f"from {len(manifest['allocation'])} strata into {folder}")
    typer.echo(f"review {folder / 'gallery.html'} (fill in verdicts.csv) or import tasks.json into Label Studio, "
               "then run `groundcap audit import FILE`")


@audit_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Label Studio JSON export, or a CSV item_id,verdict,corrected_caption.")],
    root: Root = Path("."),
    params_file: ParamsFile = None,
    fmt: Annotated[str, typer.Option("--format", help="auto | label-studio | csv (auto: .csv is csv).")] = "auto",
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="manifest.json of the export (default: ROOT/audit/manifest.json)."),
    ] = None,
) -> None:
    """Merge the verdicts into audit.verdicts, write reports/audit.json and show the error rates and the gate."""
    from groundcap.audit import sample, verdicts
    from groundcap.storage import writer_lock

    def run() -> tuple[dict, verdicts.GateResult]:
        # a writer of ROOT (audit.verdicts, reports/audit.json) that reads the work tables: one at a time
        with writer_lock.hold(root, "groundcap audit import"):
            params = project_params(root, params_file)
            exported = sample.read_manifest(manifest or root / sample.DEFAULT_DIR / sample.MANIFEST)
            summary = verdicts.import_file(root, params, file, fmt, exported)
            return summary, verdicts.gate(root, params)

    summary, gate = guard(run)
    typer.echo(f"imported {summary['imported']} verdicts; {summary['audited']} audited images in all "
               f"({summary['stale']} stale), {summary['errors']} rejected or edited")
    for name, s in summary["strata"].items():
        if s["audited"]:
            typer.echo(f"  {name}: {s['errors']}/{s['audited']} errors (population {s['population']}), "
                       f"Wilson {s['wilson'][0]:.1%}-{s['wilson'][1]:.1%}")
    false = summary["false_rejection"]
    if false["audited"]:
        typer.echo(f"false rejections: {false['accepted']} of {false['audited']} QA-failed images accepted as they "
                   f"are ({false['rate']:.1%}, Wilson {false['wilson'][0]:.1%}-{false['wilson'][1]:.1%})")
    typer.echo(verdicts.human_test_message(summary["human_test"]))
    typer.echo(gate.message)
