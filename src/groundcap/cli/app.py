"""The ``groundcap`` command: one sub-command per pipeline stage, ``run`` for all of them, ``backends``.

Printing help imports only this package and ``pipeline.order``: each command imports what it runs when it
runs (tests/test_cli_startup.py pins what ``groundcap --help`` loads), so every DVC stage and every
``--help`` starts at once instead of loading datasets, scipy and the stages first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from groundcap.cli.audit import audit_app
from groundcap.cli.common import ParamsFile, Quiet, Root, guard, new_app, project_params
from groundcap.cli.export import export_app
from groundcap.cli.publish import publish
from groundcap.pipeline import order

app = new_app(
    "Build, check and release datasets of dense grounded captions. "
    "Each stage reads params.yaml and writes work/<stage>/; `run` chains them all."
)


def _stage_command(name: str):
    def command(root: Root = Path("."), params_file: ParamsFile = None, quiet: Quiet = False) -> None:
        from groundcap.pipeline import preflight, runner
        from groundcap.pipeline.stage import Context
        from groundcap.storage import writer_lock

        def run_one() -> None:
            with writer_lock.hold(root, f"groundcap {name}"):
                params = project_params(root, params_file)
                stage = order.stage(name)
                preflight.require(params, [stage])
                runner.run_stage(Context(root=root, params=params, progress=not quiet), stage)

        guard(run_one)

    command.__doc__ = order.HELP[name]
    return command


for _name in order.NAMES:
    app.command(_name)(_stage_command(_name))

app.add_typer(audit_app, name="audit")
app.add_typer(export_app, name="export")
app.command("publish")(publish)


@app.command()
def run(
    source: Annotated[str, typer.Option("--source", help="Folder of images, text file of paths/URLs, or 'sample:'.")],
    workdir: Annotated[str, typer.Option(
        "--workdir", help="Writes DIR/work, DIR/reports and DIR/release; DIR may be a shared store's URL "
        "(s3://bucket/x: docs/pipeline.md, \"Shared work folders\").")],
    params_file: ParamsFile = None,
    quiet: Quiet = False,
    mirror: Annotated[Path | None, typer.Option(
        "--mirror", help="With a URL --workdir: the local copy the global stages run on "
        "(default: ~/.cache/groundcap/mirror/<URL>).")] = None,
) -> None:
    """Run every stage in process (no DVC) and write the release to WORKDIR/release."""
    from groundcap import params as params_mod
    from groundcap.cli.common import storage_error
    from groundcap.credentials import failure
    from groundcap.errors import StorageError
    from groundcap.pipeline import preflight, runner
    from groundcap.pipeline.stage import Context
    from groundcap.storage import writer_lock
    from groundcap.storage.remote import RemotePath, is_url

    def run_stages() -> list[runner.Report]:
        params = params_mod.load(params_file)  # refused params create no work folder
        params["source"] = source
        preflight.require(params, list(order.stages()))
        if not is_url(workdir):
            with writer_lock.hold(Path(workdir), "groundcap run"):
                return runner.run_all(Context(root=Path(workdir), params=params, progress=not quiet))
        local = mirror or Path.home() / ".cache" / "groundcap" / "mirror" / workdir.replace("://", "/", 1)
        try:
            with writer_lock.hold(RemotePath.at(workdir), "groundcap run"):
                return runner.run_all(Context(root=local, params=params, progress=not quiet, store=workdir))
        except OSError as exc:  # the store refused (no bucket, no permission, unreachable): one redacted line
            raise storage_error(exc) or StorageError(failure(f"writing {workdir}", exc)) from None

    reports = guard(run_stages)
    if not quiet:
        typer.echo("\n".join(report.line() for report in reports))
    typer.echo(f"release written to {workdir.rstrip('/')}/release")


@app.command("eval")
def evaluate(
    release: Annotated[str, typer.Option("--release", help="Release folder or fsspec URL holding data/*.parquet.")],
    predictions: Annotated[list[Path], typer.Option(
        "--predictions", help="Parquet or JSONL keyed by image_id: scene_caption (<rN> with regions[].bbox, or inline "
        "[x1, y1, x2, y2] boxes) and/or region captions keyed by the reference region_id (region_captions "
        "[{region_id, caption}]). Repeat to compare.")],
    split: Annotated[str, typer.Option("--split", help="The split to score against.")] = "human_test",
    judge: Annotated[str, typer.Option("--judge", help="rules_minilm (CPU, default) or llm.")] = "rules_minilm",
    judge_engine: Annotated[str | None, typer.Option(
        "--judge-engine", help="llm judge: vllm, openai or transformers.")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="llm judge: the model id.")] = None,
    judge_option: Annotated[list[str] | None, typer.Option(
        "--judge-option", help="llm judge engine option KEY=VALUE (VALUE read as JSON when it parses), "
        "e.g. base_url=...")] = None,
    output: Annotated[Path, typer.Option("--output", help="Where the JSON report goes.")] = Path("reports/eval.json"),
    judge_agreement: Annotated[bool, typer.Option(
        "--judge-agreement", help="Also report how often the judge answers as rules_minilm does.")] = False,
) -> None:
    """Score captioning models on a release split: PancapScore-style scene F1s (tags, locations, attributes,
    relations, global state, overall) and DLC-Bench-style region scores with uniqueness; print a Markdown table."""
    from groundcap import evaluate as evaluate_mod
    from groundcap.errors import ParamsError
    from groundcap.evaluate import judge_by_name, judges, report

    def options() -> dict:
        out = {}
        for item in judge_option or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise ParamsError(f"--judge-option {item!r} must be KEY=VALUE")
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
        return out

    def run_eval() -> dict:
        chosen = judge_by_name.make(judge, judge_engine, judge_model, options())
        rules = judges.RulesMiniLMJudge() if judge_agreement and judge != "rules_minilm" else None
        return evaluate_mod.run(release, split, predictions, chosen, output, rules)

    result = guard(run_eval)
    typer.echo(report.table(result))
    typer.echo(f"report written to {output}")


@app.command("dvc-yaml")
def write_dvc_yaml(
    root: Root = Path("."),
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when ROOT/dvc.yaml differs, writing nothing.")] = False,
) -> None:
    """Write ROOT/dvc.yaml from the stages' declarations (inputs, params, code, outputs)."""
    from groundcap.pipeline import dvc_yaml

    text, path = dvc_yaml.render(), root / "dvc.yaml"
    if check:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            typer.secho(f"{path} is out of date: run `groundcap dvc-yaml`", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        return
    path.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path}")


@app.command("backends")
def list_backends(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List the registered annotation backends per step, what they need, and whether they can run here.

    Embedded backends run on this machine's CPU; production (GPU) backends run here when their
    packages are installed, on the CPU when no CUDA device is found (fine for tests, slow for data).
    """
    from groundcap.annotators import registry

    cuda = registry.cuda_available()
    rows = [
        {"step": b.step, "name": b.name, "kind": "production" if b.device == "gpu" else "embedded",
         "device": b.device, "needs": list(b.needs), "missing": b.missing(), "runnable": not b.missing(),
         "on_gpu_here": b.device == "gpu" and cuda and not b.missing(), "description": b.description}
        for b in registry.backends()
    ]
    if as_json:
        json.dump({"cuda_available": cuda, "backends": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    typer.echo(f"CUDA device: {'yes' if cuda else 'no (GPU backends run on the CPU, slowly)'}")
    for r in rows:
        state = "ok" if r["runnable"] else f"missing {', '.join(r['missing'])}"
        typer.echo(f"{r['step']:<19} {r['name']:<15} {r['kind']:<10} {state:<22} {r['description']}")


@app.command("diff")
def diff_releases(
    old: Annotated[str, typer.Argument(help="The earlier release: a folder or fsspec URL (hf://datasets/ORG/NAME@v1.0.0).")],
    new: Annotated[str, typer.Argument(help="The later release, likewise.")],
    as_json: Annotated[bool, typer.Option("--json", help="Every image id, machine-readable.")] = False,
) -> None:
    """Images added, removed, changed (annotations differ) or moved between splits from OLD to NEW."""
    from groundcap.releases import diff

    result = guard(lambda: diff.compare(diff.index(old), diff.index(new)))
    if as_json:
        json.dump(result.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        typer.echo("\n".join(result.lines()))


@app.command("hydrate")
def hydrate_release(
    release: Annotated[Path, typer.Argument(help="A reference release folder (release.images: reference).")],
    source: Annotated[str, typer.Option("--source", help="Your copy of its source, in the form `source:` takes "
                                        "(a folder, sa1b:<folder>, coco:instances.json?images=<folder>, ...).")],
    out: Annotated[Path, typer.Option("--out", help="A new or empty folder for the release with its images.")],
) -> None:
    """Rebuild a reference release's images from your copy of its source, each checked against its SHA-256;
    a missing or changed image is named and nothing is written."""
    from groundcap.releases import hydrate

    files = guard(lambda: hydrate.hydrate(release, source, out))
    typer.echo(f"hydrated {release} into {out}: {len(files)} files")


Profile = Annotated[str | None, typer.Option("--profile", help="A profile on top of the params (gpu, sa_pancap, "
                                                                 "or a YAML path).")]


@app.command("doctor")
def doctor(root: Root = Path("."), params_file: ParamsFile = None, profile: Profile = None) -> None:
    """Check, before a run, that every backend the params name is installed, its models are on this machine,
    CUDA is there when required and the VLM engines fit the GPU; exit 1 when a check fails."""
    from groundcap.pipeline import preflight

    findings = guard(lambda: preflight.check(project_params(root, params_file, profile), list(order.stages())))
    for f in findings:
        typer.echo(f"{'ok  ' if f.ok else 'FAIL'} {f.stage:<16} {f.what:<45} {f.detail}")
    if not findings:
        typer.echo("nothing to check: no stage loads a model (the embedded backends ship with their packages)")
    if any(not f.ok for f in findings):
        raise typer.Exit(1)


models_app = new_app("The models the params' backends load from the Hugging Face Hub.")
app.add_typer(models_app, name="models")


@models_app.command("fetch")
def fetch_models(root: Root = Path("."), params_file: ParamsFile = None, profile: Profile = None) -> None:
    """Download every model the params (and profile) name into the Hugging Face cache (HF_HOME), so a run
    on nodes without the Hub starts with everything in place."""
    from huggingface_hub import snapshot_download

    from groundcap.pipeline import preflight

    for model in guard(lambda: preflight.hub_models(list(order.stages()), project_params(root, params_file, profile))):
        if preflight.model_state(model)[0]:
            typer.echo(f"{model}: already here")
            continue
        typer.echo(f"{model}: downloading")
        guard(lambda m=model: snapshot_download(m))
