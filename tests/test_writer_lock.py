"""One writer per work folder (``groundcap.storage.writer_lock``) and temporary names that belong to one writer
(``groundcap.storage.atomic``): two runs on one folder used to corrupt each other, and two writers of one plot
shared ``.regions_per_image.png.tmp``, so one of them failed."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from groundcap.errors import WorkdirBusy
from groundcap.storage import atomic, writer_lock

SRC = Path(__file__).resolve().parents[1] / "src"


def _env() -> dict:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("GROUNDCAP_")},
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def _groundcap(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "groundcap", *args], env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def _lock(root: Path, **fields) -> Path:
    record = writer_lock.holder_record("groundcap run") | fields
    path = root / writer_lock.LOCK
    path.write_text(json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_second_run_on_a_folder_exits_at_once_naming_the_holder(tmp_path):
    workdir = tmp_path / "w"
    first = _groundcap("run", "--source", "sample:", "--workdir", str(workdir), "-q")
    try:
        lock = workdir / writer_lock.LOCK
        deadline = time.monotonic() + 60
        while not lock.is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lock.is_file(), first.communicate()
        second = _groundcap("run", "--source", "sample:", "--workdir", str(workdir), "-q")
        out, err = second.communicate(timeout=60)
        assert first.poll() is None  # the first was still running while the second was refused
        assert second.returncode == 2, err
        assert f"pid {first.pid} on {socket.gethostname()} (`groundcap run`" in err and "Traceback" not in err
        assert "release written" not in out
        # a stage command is a writer too (what dvc.yaml runs)
        stage = _groundcap("ingest", "--root", str(workdir))
        _, err = stage.communicate(timeout=60)
        assert stage.returncode == 2 and f"pid {first.pid}" in err, err
    finally:
        first.send_signal(signal.SIGKILL)  # killed: it cannot release its lock
        first.communicate()
    assert json.loads((workdir / writer_lock.LOCK).read_text())["pid"] == first.pid
    # the next writer finds its holder dead and takes the lock over, with a warning
    proc = subprocess.run([sys.executable, "-c", "from pathlib import Path; from groundcap.storage import writer_lock;"
                           f"writer_lock.release(Path({str(workdir)!r}), writer_lock.acquire(Path({str(workdir)!r}),"
                           " 'groundcap run'))"], env=_env(), capture_output=True, text=True, timeout=60, check=True)
    assert f"took over the lock of {workdir} from pid {first.pid}" in proc.stderr
    assert not (workdir / writer_lock.LOCK).exists()


def test_the_lock_is_released_after_its_block_even_on_error(tmp_path):
    with pytest.raises(RuntimeError), writer_lock.hold(tmp_path, "groundcap card"):
        holder = json.loads((tmp_path / writer_lock.LOCK).read_text())
        assert (holder["pid"], holder["host"], holder["command"]) == (os.getpid(), socket.gethostname(),
                                                                      "groundcap card")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", holder["started"])
        raise RuntimeError("a stage failed")
    assert not (tmp_path / writer_lock.LOCK).exists()


def test_a_live_holder_refuses_a_second_writer(tmp_path):
    with writer_lock.hold(tmp_path, "groundcap segment"):
        with pytest.raises(WorkdirBusy, match=f"pid {os.getpid()} on .*`groundcap segment`"):
            writer_lock.acquire(tmp_path, "groundcap run")
    writer_lock.release(tmp_path, writer_lock.acquire(tmp_path, "groundcap run"))  # free again


@pytest.mark.parametrize("stale", [
    {"pid": "dead"},  # no such process
    {"pid_started": "1"},  # this pid, but a process started later holds it now: the pid was reused
    {"boot_id": "0000-before-a-reboot"},
])
def test_a_stale_lock_on_this_host_is_taken_over_with_a_warning(tmp_path, capfd, stale):
    pid = _dead_pid() if stale.get("pid") == "dead" else os.getpid()
    _lock(tmp_path, **(stale | {"pid": pid}))
    text = writer_lock.acquire(tmp_path, "groundcap run")
    assert json.loads(text)["pid"] == os.getpid()
    warning = capfd.readouterr().err
    assert f"warning: took over the lock of {tmp_path} from pid {pid} on {socket.gethostname()}" in warning
    assert [p.name for p in tmp_path.iterdir()] == [writer_lock.LOCK]  # nothing left beside it


def test_a_lock_from_another_host_or_unreadable_is_never_taken(tmp_path):
    path = _lock(tmp_path, host="elsewhere", pid=_dead_pid())
    with pytest.raises(WorkdirBusy, match=f"on elsewhere .*delete {re.escape(str(path))}"):
        writer_lock.acquire(tmp_path, "groundcap run")
    path.write_text("")
    with pytest.raises(WorkdirBusy, match="lock file is still empty"):
        writer_lock.acquire(tmp_path, "groundcap run")


@pytest.mark.slow
def test_processes_racing_for_one_stale_lock_get_it_once(tmp_path):
    _lock(tmp_path, pid=_dead_pid())
    script = ("import sys, time; from pathlib import Path; from groundcap.storage import writer_lock\n"
              "try:\n    writer_lock.acquire(Path(sys.argv[1]), 'groundcap run')\nexcept Exception as e:\n"
              "    print('busy', type(e).__name__); sys.exit()\nprint('held'); sys.stdout.flush(); time.sleep(3)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(6)]
    outcomes = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert sorted(outcomes) == ["busy WorkdirBusy"] * 5 + ["held"], outcomes


def test_writers_of_one_file_never_share_a_temporary_name(tmp_path):
    """The finding's collision, made deterministic: a writer starts, another writes the same file whole, the
    first finishes. With one shared temporary name the second truncated and renamed the first's file, and
    the first's rename failed; now each has its own, and the last rename wins with a whole file."""
    target = tmp_path / "regions_per_image.png"
    with atomic.replacing(target) as first:
        first.write_bytes(b"first")
        with atomic.replacing(target) as second:
            assert second != first and second.name.startswith(".regions_per_image.png.") and atomic.is_temporary(second)
            second.write_bytes(b"second")
        assert target.read_bytes() == b"second" and first.read_bytes() == b"first"
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert f".{os.getpid()}-" in atomic.temporary(target).name  # per process, then per call


def test_no_module_names_its_own_temporary_files():
    """Every temporary name comes from ``atomic.temporary``: none is spelled out elsewhere."""
    package = SRC / "groundcap"
    spelled = [f"{path.relative_to(package)}:{n}" for path in package.rglob("*.py") if path.name != "atomic.py"
               for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if re.search(r"""\.tmp["']""", line)]
    assert spelled == []
