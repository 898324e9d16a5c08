"""The ``groundcap`` command: one sub-command per pipeline stage, ``run`` for all of them, ``backends``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from groundcap import params as params_mod
from groundcap import stages
from groundcap.audit.cli import audit_app
from groundcap.engine import Context

app = typer.Typer(
    help="Build, check and release datasets of dense grounded captions. "
    "Each stage reads params.yaml and writes work/<stage>/; `run` chains them all.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Root = Annotated[Path, typer.Option("--root", help="Project folder holding work/, reports/ and release/.")]
ParamsFile = Annotated[
    Optional[Path],
    typer.Option("--params", help="YAML overriding the defaults (stage commands default to ROOT/params.yaml)."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]

# Errors a user can fix: shown as one line and exit code 2, not as a traceback
# (set GROUNDCAP_DEBUG=1 to see the traceback).
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError, KeyError)


def _fail(exc: BaseException) -> None:
    if os.environ.get("GROUNDCAP_DEBUG"):
        raise exc
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _stage_command(name: str):
    def command(root: Root = Path("."), params_file: ParamsFile = None, quiet: Quiet = False) -> None:
        try:
            if params_file is None and (root / "params.yaml").is_file():
                params_file = root / "params.yaml"
            ctx = Context(root=root, params=params_mod.load(params_file), progress=not quiet)
            stages.runner(name)(ctx)
        except _USER_ERRORS as exc:
            _fail(exc)

    command.__doc__ = stages.STAGES[name]
    return command


for _name in stages.ORDER:
    app.command(_name)(_stage_command(_name))

app.add_typer(audit_app, name="audit")


@app.command()
def run(
    source: Annotated[str, typer.Option("--source", help="Folder of images, text file of paths/URLs, or 'sample:'.")],
    workdir: Annotated[Path, typer.Option("--workdir", help="Writes DIR/work, DIR/reports and DIR/release.")],
    params_file: ParamsFile = None,
    quiet: Quiet = False,
) -> None:
    """Run every stage in process (no DVC) and write the release to WORKDIR/release."""
    try:
        params = params_mod.load(params_file)
        params["source"] = source
        ctx = Context(root=workdir, params=params, progress=not quiet)
        stages.run_all(ctx)
    except _USER_ERRORS as exc:
        _fail(exc)
    typer.echo(f"release written to {workdir / 'release'}")


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
