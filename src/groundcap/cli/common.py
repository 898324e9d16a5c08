"""What every ``groundcap`` command shares: the app factory, the common options, user-error handling."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Annotated

import typer

from groundcap.credentials import redact
from groundcap.errors import GroundcapError, StorageError

Root = Annotated[Path, typer.Option("--root", help="Project folder holding work/, reports/ and release/.")]
ParamsFile = Annotated[
    Path | None,
    typer.Option("--params", help="YAML overriding the defaults (default: ROOT/params.yaml if present)."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]

# Errors a user can fix: shown as one line and exit code 2, not as a traceback
# (set GROUNDCAP_DEBUG=1 to see the traceback). Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (GroundcapError,)


def new_app(help: str) -> typer.Typer:
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def fail(exc: BaseException) -> None:
    if os.environ.get("GROUNDCAP_DEBUG"):
        raise exc
    typer.secho(redact(f"error: {exc}"), fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


# Storage errors: what they mean for a run, and what to do about them.
_STORAGE = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the output is on a read-only filesystem",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
}


def storage_error(exc: OSError) -> StorageError | None:
    """A clear error for a full or read-only output, or None for other OS errors."""
    if exc.errno not in _STORAGE:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    return StorageError(f"{_STORAGE[exc.errno]}{where}: free space or point --root/--workdir elsewhere, then run "
                        "again; finished parts are kept and the run resumes from them")


def guard(fn):
    """Run ``fn``, turning the errors a user can fix into one red line and exit code 2."""
    try:
        return fn()
    except USER_ERRORS as exc:
        fail(exc)
    except OSError as exc:
        if (clear := storage_error(exc)) is None:
            raise
        fail(clear)


def project_params(root: Path, params_file: Path | None, profile: str | None = None) -> dict:
    """The defaults overridden by ``params_file``, or by ROOT/params.yaml when none is given, then by ``profile``."""
    from groundcap import params as params_mod

    if params_file is None and (root / "params.yaml").is_file():
        params_file = root / "params.yaml"
    return params_mod.load(params_file, profile)
