"""Local files, read only when they are regular files: a FIFO, socket or device is never opened.

The kind is checked with ``stat`` when the source is listed (so the entry is refused with its reason and
nothing blocks), and again with ``fstat`` on the descriptor, opened non-blocking, in case the path was
swapped for something else in between.
"""

from __future__ import annotations

import os
import stat

from groundcap.sources.entry import Reader, Refused

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def kind(mode: int) -> str:
    """What a file of this mode is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def not_regular(mode: int, link: bool = False) -> str | None:
    """The refusal for a file of this mode, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return f"{'a link to ' if link else ''}{kind(mode)}, not a regular file; never opened"


def refusal(path: str) -> str | None:
    """Why ``path`` (links followed) cannot be read as an image file, or None; nothing is opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "a dangling link: its target does not exist" if os.path.islink(path) else "no such file"
    except OSError as exc:
        return f"cannot stat: {exc.strerror or type(exc).__name__}"
    return not_regular(st.st_mode, link=os.path.islink(path))


class NotRegular(Refused, OSError):
    """A path that is no regular file once opened: a refusal, and an ``OSError`` to code that reads files."""


def open_regular(path: str, *, follow: bool = True):
    """``path`` opened for binary reading if it is a regular file, without blocking on a FIFO or device
    (:class:`NotRegular` otherwise); ``follow=False`` refuses a link there."""
    fd = os.open(path, _OPEN_FLAGS | (0 if follow else os.O_NOFOLLOW))
    why = not_regular(os.fstat(fd).st_mode)
    if why:
        os.close(fd)
        raise NotRegular(why)
    return os.fdopen(fd, "rb")


def reader(path: str, *, follow: bool = True) -> Reader:
    """Reads ``path`` if it still is a regular file when opened; ``follow=False`` refuses a link there."""

    def read(limit: int) -> bytes:
        try:
            fh = open_regular(path, follow=follow)
        except NotRegular as exc:
            raise Refused(f"{exc} (it changed after the source was listed)") from None
        with fh:
            return fh.read(limit)

    return read
