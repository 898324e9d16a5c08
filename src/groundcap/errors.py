"""Errors a user can fix: the CLI shows them as one red line and exits with code 2.

Everything else (``ValueError``, ``KeyError``, ``RuntimeError`` from a bug) propagates with its
traceback. Raise the most specific subclass, with a message that says what to do. Some subclasses
also inherit the built-in type they replaced so that existing ``except ValueError`` callers keep
working; the CLI decides by :class:`GroundcapError` alone.
"""

from __future__ import annotations


class GroundcapError(Exception):
    """A problem the user can fix (a bad parameter, a missing input, a refused release)."""


class ParamsError(GroundcapError, ValueError):
    """A params file is malformed, names a key groundcap does not know, or holds a bad value."""


class SourceError(GroundcapError, ValueError):
    """The image source is not a folder, a list file or ``sample:``, or yields no usable image."""


class StageInputError(GroundcapError, RuntimeError):
    """A stage's input (``work/<stage>``) is missing or out of step: run the earlier stages first."""


class BackendUnavailable(GroundcapError, RuntimeError):
    """A backend named in params cannot run here (a package is missing)."""


class UnknownName(GroundcapError, KeyError):
    """A backend, step or stage name nobody registered."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class ReleaseError(GroundcapError, ValueError):
    """A release cannot be built or read as asked (bad version, not a release folder, ...)."""


class AuditError(GroundcapError, ValueError):
    """Audit verdicts or samples that cannot be used, or a release the audit gate refuses."""


class PublishError(GroundcapError, RuntimeError):
    """A publish that must not go ahead (target already published, no token, upload failed)."""


class StorageError(GroundcapError, OSError):
    """The output is full, over quota, read-only or not writable."""


class WorkdirBusy(GroundcapError, RuntimeError):
    """Another groundcap process is writing the same work folder (it holds the folder's lock)."""


class EngineDead(GroundcapError, RuntimeError):
    """A model engine died (CUDA out of memory, a crashed engine process): no later image would escape it,
    so the stage stops instead of recording the error on every image; finished parts stay, and the
    next run resumes from them."""


class EngineStartFailed(EngineDead):
    """A model engine could not start (vLLM's engine core failed to initialise, too little free GPU memory,
    broken weights): no image could be served, so the stage stops at once with the engine's reason instead
    of starting the engine again for every image."""


def is_fatal(exc: BaseException) -> bool:
    """Whether an engine's exception means the engine is gone: vLLM's ``EngineDeadError`` (its module
    moved between releases, so matched by name) or torch's CUDA ``OutOfMemoryError``."""
    return isinstance(exc, EngineDead) or any(
        cls.__name__ in ("EngineDeadError", "OutOfMemoryError") for cls in type(exc).__mro__)
