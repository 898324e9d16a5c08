"""One writer per work folder: the lock every stage command and ``groundcap run`` hold while they write.

Two runs on one folder overwrite each other's parts, plots and release (both said "release written";
the folder held the second's). So a writer first creates ``ROOT/.groundcap.lock``, holding its pid,
host, command and start time; a second writer finds it, exits at once (:class:`WorkdirBusy`, exit
code 2) and says who holds it. The lock is removed when the holder ends, even on an error.

Why an exclusive create (``O_CREAT | O_EXCL``) and not ``fcntl.flock``: work folders live on shared
storage. ``flock`` on NFS is emulated with byte-range locks that need the lock manager (NFSv3's lockd)
and do nothing across machines on mounts made with ``nolock`` or ``local_lock=all``, failing silently;
an exclusive create is atomic on local filesystems and on NFSv3/v4 (the server decides, and NFSv3
clients send a verifier so a retried create does not report a false failure), with no daemon, and
the file says who holds it. What ``flock`` gives for free, release when the holder dies, is done
here by hand: a lock whose holder ran on this host and is gone (no such pid, or that pid now belongs
to a process started later, or the machine rebooted since) is stale and taken over with a warning.
A lock held from another machine cannot be checked from here: the message says to delete the file
if that run is gone. A takeover moves the stale file aside under a name of its own and checks that
what it moved is the stale lock it read, putting back any live lock it moved instead, so two
processes that find one stale lock never both take it.

On a shared store (a ``RemotePath`` root, ``s3://bucket/x``) the exclusive create is a conditional PUT
(``If-None-Match: *``): atomic where the server honours it (AWS S3 since August 2024; moto, which the tests run)
and s3fs sends it; other fsspec filesystems check, then write (a race two starting writers can both win). A store has no
rename, so a stale lock is deleted after reading it back unchanged: a best-effort takeover, since another
process may take the lock between that read and the delete.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from groundcap.errors import WorkdirBusy
from groundcap.storage import atomic
from groundcap.storage.remote import RemotePath

LOCK = ".groundcap.lock"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _read_first_line(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").split("\n", 1)[0].strip() or None
    except OSError:
        return None


def _started(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux), so a reused pid is told apart."""
    stat = _read_first_line(Path(f"/proc/{pid}/stat"))
    return stat.rsplit(")", 1)[1].split()[19] if stat else None


def holder_record(command: str) -> dict:
    """What the lock says about this process."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "boot_id": _read_first_line(_BOOT_ID), "pid_started": _started(os.getpid())}


def _alive(holder: dict) -> bool:
    """Whether the process the lock names may still run: always, for a lock from another host."""
    if holder.get("host") != socket.gethostname():
        return True
    if holder.get("boot_id") and holder["boot_id"] != _read_first_line(_BOOT_ID):
        return False  # written before this machine rebooted
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True  # not a lock this module wrote: leave it to the user
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process
    return not (holder.get("pid_started") and _started(pid) not in (None, holder["pid_started"]))


def describe(holder: dict | None) -> str:
    if holder is None:
        return "a process whose lock file is still empty (being created now, or left by a crash)"
    return (f"pid {holder.get('pid')} on {holder.get('host')} (`{holder.get('command')}`, "
            f"started {holder.get('started')})")


def _create(path: Path | RemotePath, text: str) -> bool:
    """Create ``path`` holding ``text`` if it does not exist; whether this call created it."""
    if isinstance(path, RemotePath):
        return path.create(text.encode("utf-8"))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _read(path: Path | RemotePath) -> tuple[str, dict | None] | None:
    """(text, holder) of the lock file; None when there is none; holder None while it is being written."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = None
    return text, holder if isinstance(holder, dict) else None


def _take_over(path: Path | RemotePath, stale_text: str) -> bool:
    """Remove the stale lock whose content is ``stale_text``; False when another process replaced it first."""
    if isinstance(path, RemotePath):  # no rename: delete it if it still reads as the stale lock (best effort)
        found = _read(path)
        if found is not None and found[0] == stale_text:
            path.unlink(missing_ok=True)
        return True
    aside = atomic.temporary(path)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True  # someone removed it: try to create ours
    moved = aside.read_text(encoding="utf-8")
    if moved != stale_text:  # a live lock taken meanwhile by another process: put it back
        _create(path, moved)
    aside.unlink()
    return moved == stale_text


def acquire(root: Path | RemotePath, command: str) -> str:
    """Take the lock of ``root`` for ``command``; the text written (for :func:`release`).

    Raises :class:`WorkdirBusy` naming the holder when another live process holds it.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK
    text = json.dumps(holder_record(command), sort_keys=True) + "\n"
    for _ in range(3):  # a lock that vanishes or goes stale between our steps: look again
        if _create(path, text):
            return text
        found = _read(path)
        if found is None:
            continue
        stale_text, holder = found
        if holder is None or _alive(holder):
            raise WorkdirBusy(
                f"{root} is being written by another groundcap: {describe(holder)}. Wait for it to finish or "
                f"use another folder; if that run is gone (killed on another machine), delete {path} and run again")
        if _take_over(path, stale_text):
            print(f"warning: took over the lock of {root} from {describe(holder)}, which ended without releasing "
                  "it; the run goes on from the parts it finished", file=sys.stderr)
    raise WorkdirBusy(f"{root}: could not take {path}, which other processes keep changing; run again")


def release(root: Path | RemotePath, text: str) -> None:
    """Remove the lock of ``root`` if it is still the one ``text`` was written into."""
    path = root / LOCK
    found = _read(path)
    if found is not None and found[0] == text:
        path.unlink(missing_ok=True)


@contextmanager
def hold(root: Path | RemotePath, command: str) -> Iterator[None]:
    """Hold the lock of ``root`` while the block runs (see :func:`acquire`). A SIGTERM (``kill``, a job
    scheduler's timeout) ends the block as an exception would, so the lock goes with it; a SIGKILL leaves
    it, and the next writer takes it over as stale."""
    text = acquire(root, command)
    try:
        with _terminate_as_exit():
            yield
    finally:
        release(root, text)


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` while the block runs (in the main thread; elsewhere signals cannot
    be handled), and the previous handler is back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
