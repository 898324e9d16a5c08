"""Issue 15, findings 1-4 and 8: sources nobody vetted cannot hang ingest, escape their folder, fetch with
this machine's credentials or leak one into ``rejects.parquet``. Each runs the real ingest stage against
real files (FIFOs, sockets, links) and loopback HTTP servers."""

from __future__ import annotations

import base64
import copy
import http.server
import io
import os
import re
import socket
import tarfile
import threading
import time
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from groundcap import params
from groundcap.pipeline.stage import Context
from groundcap.sources import SourceError, SourcePolicy, fetch, iter_source
from groundcap.stages import ingest as ingest_stage
from ports import free_port

TOKEN = "hf_" + "Q7x" * 10  # shaped like a Hub token; must never reach a table


def _png(seed: int, side: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _params(source: Path | str, **policy) -> dict:
    p = copy.deepcopy(params.defaults())
    p["source"] = str(source)
    p["ingest"]["source_policy"].update(policy)
    params.validation.check(p)
    return p


def _ingest(tmp_path: Path, source: Path | str, **policy) -> tuple[pl.DataFrame, dict[str, str]]:
    root = tmp_path / "run"
    try:
        ingest_stage.STAGE.run(Context(root=root, params=_params(source, **policy), progress=False))
    except ingest_stage.NoImages:
        pass
    images = pl.read_parquet(root / "work/ingest/*.parquet") if any((root / "work/ingest").glob("*.parquet")) \
        else pl.DataFrame({"source_path": [], "image_id": []})
    rejects = pl.read_parquet(root / "reports/rejects.parquet")
    return images, dict(zip(rejects["path"], rejects["reason"], strict=True))


# --- loopback servers ---------------------------------------------------------------------------------


@contextmanager
def _silent_server():
    """Accepts connections (the kernel completes the handshake) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        if self.path.startswith("/slow"):  # headers at once, then a byte every 0.2 s: never a read timeout
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(500):
                    self.wfile.write(b"\x89")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            return
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.lstrip("/") in self.files:
            body = self.files[self.path.lstrip("/")]
            if match := re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", "")):  # fsspec's ranged reads
                first, last = int(match[1]), min(int(match[2]), len(body) - 1)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first}-{last}/{len(body)}")
                body = body[first:last + 1]
            else:
                self.send_response(200)
        else:  # a server that echoes the request headers into its error page, as some proxies do
            body = f"denied; you sent:\n{self.headers}".encode()
            self.send_response(401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET


@contextmanager
def _server(files: dict[str, bytes] | None = None):
    handler = type("Handler", (_Handler,), {"files": files or {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- finding 1 ----------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_fifo_named_in_a_list_is_rejected_and_never_blocks(tmp_path):
    (tmp_path / "good.png").write_bytes(_png(1))
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "list.txt").write_text("fifo.png\ngood.png\n")
    images, rejects = _ingest(tmp_path, tmp_path / "list.txt")
    assert list(images["source_path"]) == ["good.png"]
    assert "FIFO" in rejects["fifo.png"] and "never opened" in rejects["fifo.png"]


# --- finding 2 ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_servers_that_never_answer_or_drip_cannot_stall_ingest(tmp_path):
    good = _png(2)
    with _silent_server() as silent, _server({"good.png": good}) as served:
        entries = [f"{silent}/{i}.png" for i in range(6)] + [f"{served}/slow.png", f"{served}/good.png"]
        (tmp_path / "list.txt").write_text("\n".join(entries) + "\n")
        start = time.monotonic()
        images, rejects = _ingest(tmp_path, tmp_path / "list.txt", connect_timeout_s=1, read_timeout_s=1,
                                  file_timeout_s=3, workers=8)
        elapsed = time.monotonic() - start
    # all eight in flight at once: about one file_timeout_s, not six read timeouts plus a drip
    assert elapsed < 8, elapsed
    assert list(images["source_path"]) == [f"{served}/good.png"]
    for i in range(6):
        assert "sent nothing for ingest.source_policy.read_timeout_s=1" in rejects[f"{silent}/{i}.png"]
    assert "file_timeout_s=3" in rejects[f"{served}/slow.png"]


@pytest.mark.timeout(30)
def test_the_fetch_window_keeps_the_source_order_and_bounds_the_reads_in_flight():
    lock, live, peak = threading.Lock(), [0], [0]

    def reader(i):
        def read(limit):
            with lock:
                live[0] += 1
                peak[0] = max(peak[0], live[0])
            time.sleep(0.05 * ((i * 7) % 5))  # finish out of order
            with lock:
                live[0] -= 1
            return bytes([i])
        return read

    from groundcap.sources import SourceFile

    items = [SourceFile(str(i), reader(i)) for i in range(20)]
    got = list(fetch(items, SourcePolicy(workers=3), 10))
    assert [item.name for item, _ in got] == [str(i) for i in range(20)]
    assert [data for _, data in got] == [bytes([i]) for i in range(20)]
    assert peak[0] == 3


# --- finding 3 ----------------------------------------------------------------------------------------


def test_a_link_out_of_a_folder_is_rejected_unless_the_policy_follows_links(tmp_path):
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    src.mkdir()
    elsewhere.mkdir()
    (elsewhere / "secret.png").write_bytes(_png(3))
    (src / "a.png").write_bytes(_png(4))
    (src / "x.png").symlink_to(elsewhere / "secret.png")
    (src / "inside.png").symlink_to(src / "a.png")  # a link that stays inside is read (a duplicate here)
    images, rejects = _ingest(tmp_path, src)
    assert list(images["source_path"]) == ["a.png"]
    assert "a link out of the source folder" in rejects["x.png"]
    assert rejects["inside.png"] == "exact duplicate of a.png"
    images, _ = _ingest(tmp_path, src, follow_links=True)
    assert sorted(images["source_path"]) == ["a.png", "x.png"]


# --- finding 4 ----------------------------------------------------------------------------------------


def test_cloud_and_hub_entries_are_refused_unless_the_policy_names_them(tmp_path):
    (tmp_path / "good.png").write_bytes(_png(5))
    entries = ["s3://bucket/a.png", "gs://bucket/b.png", "hf://datasets/org/private/c.png",
               "simplecache::s3://bucket/d.png", "good.png"]
    (tmp_path / "list.txt").write_text("\n".join(entries) + "\n")
    images, rejects = _ingest(tmp_path, tmp_path / "list.txt")
    assert list(images["source_path"]) == ["good.png"]
    for entry, protocol in zip(entries[:4], ["s3", "gs", "hf", "simplecache"], strict=True):
        assert f"protocol {protocol!r} is not allowed" in rejects[entry]


@pytest.mark.parametrize("source, refusal", [
    ("wds:s3://bucket/train-{00000..00001}.tar", "protocol 's3' is not allowed"),
    ("wds:{TMP/local.tar,s3://bucket/x.tar}", "protocol 's3' is not allowed"),  # the local shard is not read first
    ("sa1b:gs://bucket/sa_{000000..000001}.tar", "protocol 'gs' is not allowed"),
    ("coco:gcs://bucket/instances.json", "protocol 'gcs' is not allowed"),
    ("coco:TMP/instances.json?images=s3://bucket/images", "protocol 's3' is not allowed"),
    ("hf://datasets/org/private", "protocol 'hf' is not allowed"),
    ("hf:org/private", "org/private is no folder here"),  # load_dataset would take it to the Hub
])
def test_kind_targets_the_policy_does_not_allow_stop_the_run_before_any_read(tmp_path, source, refusal):
    """The operator names these targets, yet the same params may come from anyone: a protocol the policy does
    not name refuses the source at once, before a read and before the last run's parts are cleared."""
    root = tmp_path / "run"
    (root / "work/ingest").mkdir(parents=True)
    (root / "work/ingest/part-00000.parquet").write_bytes(b"the last run's part")
    with pytest.raises(SourceError, match=re.escape(refusal)):
        ingest_stage.STAGE.run(Context(root=root, params=_params(source.replace("TMP", str(tmp_path))), progress=False))
    assert (root / "work/ingest/part-00000.parquet").read_bytes() == b"the last run's part"
    assert not (root / "reports").exists()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_listing_a_kind_from_a_silent_server_is_bounded_by_the_request_timeouts(tmp_path):
    """A tar's headers and a COCO file are read through fsspec's http, whose own timeout is 5 minutes: the
    policy's connect and read timeouts bound each of its requests, and the reason names the timeout. A server
    that answers is read as before."""
    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w") as tar:
        for key, data in (("000001.png", _png(10)), ("000002.png", _png(11))):
            info = tarfile.TarInfo(key)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with _server({"train-00001.tar": shard.getvalue()}) as served:
        images, _ = _ingest(tmp_path / "served", f"wds:{served}/train-00001.tar", connect_timeout_s=1, read_timeout_s=1)
    assert list(images["source_path"]) == ["train-00001.tar/000001.png", "train-00001.tar/000002.png"]
    with _silent_server() as silent:
        start = time.monotonic()
        images, rejects = _ingest(tmp_path, f"wds:{silent}/train-00000.tar", connect_timeout_s=1, read_timeout_s=1)
        with pytest.raises(SourceError, match="cannot read the COCO annotation file: .*Timeout"):
            ingest_stage.STAGE.run(Context(root=tmp_path / "coco", params=_params(
                f"coco:{silent}/instances.json", connect_timeout_s=1, read_timeout_s=1), progress=False))
        elapsed = time.monotonic() - start
    assert elapsed < 20, elapsed
    assert images.is_empty() and list(rejects) == [f"{silent}/train-00000.tar"]
    assert "Timeout on reading data from socket" in rejects[f"{silent}/train-00000.tar"]


@pytest.mark.timeout(60)
def test_no_credential_an_endpoint_echoes_reaches_the_rejects(tmp_path, monkeypatch):
    from huggingface_hub import HfFileSystem, constants

    with _server() as echo:
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setattr(constants, "ENDPOINT", echo)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # make test exports HF_HUB_OFFLINE=1
        HfFileSystem.clear_instance_cache()
        host = echo.removeprefix("http://")
        entries = [f"http://someone:{TOKEN}@{host}/a.png", f"{echo}/b.png?token={TOKEN}",
                   "hf://datasets/org/private/c.png"]
        (tmp_path / "list.txt").write_text("\n".join(entries) + "\n")
        try:
            _, rejects = _ingest(tmp_path, tmp_path / "list.txt", protocols=["file", "http", "https", "hf"])
        finally:
            HfFileSystem.clear_instance_cache()
    table = (tmp_path / "run/reports/rejects.parquet").read_bytes()
    basic = base64.b64encode(f"someone:{TOKEN}".encode()).decode()
    assert len(rejects) == 3
    for path, reason in rejects.items():
        for secret in (TOKEN, basic):
            assert secret not in path and secret not in reason, (path, reason)
    assert TOKEN.encode() not in table and basic.encode() not in table
    # the server did answer with what it was sent: the reasons hold its (masked) echo
    userinfo = next(reason for path, reason in rejects.items() if "a.png" in path)
    assert userinfo.startswith("HTTP 401") and "Authorization: ***" in userinfo
    hub = rejects["hf://datasets/org/private/c.png"]
    assert "401" in hub and "authorization: ***" in hub.lower()


@pytest.mark.timeout(30)
def test_a_redirect_to_another_host_does_not_carry_the_credentials(tmp_path):
    with _server() as first, _server() as second:
        other = second.replace("127.0.0.1", "localhost")  # another host name for the same loopback
        url = f"http://someone:{TOKEN}@{first.removeprefix('http://')}/redirect?to={other}/a.png"
        (_, data), = fetch(iter_source_list(tmp_path, [url]), SourcePolicy(), 1000)
    assert str(data).startswith("HTTP 401") and "localhost" in str(data)  # the echo of the second host
    assert "Authorization" not in str(data)


# --- finding 8 ----------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_non_regular_files_in_a_folder_each_get_a_reject_row(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.png").write_bytes(_png(6))
    os.mkfifo(src / "fifo.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock.png"))
    (src / "zero.png").symlink_to("/dev/zero")
    (src / "dangling.png").symlink_to(src / "gone.png")
    (src / "sub").mkdir()
    (src / "sub/loop").symlink_to(src)
    try:
        images, rejects = _ingest(tmp_path, src)
    finally:
        sock.close()
    assert list(images["source_path"]) == ["good.png"]
    assert "FIFO" in rejects["fifo.png"]
    assert "socket" in rejects["sock.png"]
    assert "a link to a character device" in rejects["zero.png"]
    assert "dangling link" in rejects["dangling.png"]
    assert "a link to a folder; not followed" in rejects["sub/loop"]
    assert set(rejects) == {"fifo.png", "sock.png", "zero.png", "dangling.png", "sub/loop"}


@pytest.mark.timeout(30)
def test_a_refused_connection_is_reported_as_refused(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/a.png"
    (tmp_path / "list.txt").write_text(url + "\n")
    _, rejects = _ingest(tmp_path, tmp_path / "list.txt")
    assert rejects[url] == "connection refused by 127.0.0.1"


def test_a_download_over_max_bytes_is_refused_from_its_announced_size(tmp_path):
    big = _png(7, side=256)
    with _server({"big.png": big}) as served:
        items = list(iter_source_list(tmp_path, [f"{served}/big.png"]))
        (_, data), = fetch(items, SourcePolicy(), 1001)
    assert "more than ingest.max_bytes allows" in str(data)


def iter_source_list(tmp_path: Path, entries: list[str]):
    (tmp_path / "list.txt").write_text("\n".join(entries) + "\n")
    return iter_source(str(tmp_path / "list.txt"))


def test_the_policy_is_checked_at_load_and_left_out_of_the_params_hash():
    p = _params("sample:")
    bad = copy.deepcopy(p)
    bad["ingest"]["source_policy"].update(protocols=["S3"], workers=0, file_timeout_s=0, decode_timeout_s=-1)
    with pytest.raises(params.ParamsError) as err:
        params.validation.check(bad)
    for key in ("protocols", "workers", "file_timeout_s", "decode_timeout_s"):
        assert f"ingest.source_policy.{key}" in str(err.value)
    opened = copy.deepcopy(p)
    opened["ingest"]["source_policy"].update(protocols=["file", "s3"], follow_links=True, decode_timeout_s=5)
    assert params.digest(params.content(opened)) == params.digest(params.content(p))
    assert params.content(p)["ingest"]["max_bytes"] == p["ingest"]["max_bytes"]


# --- decoding bounded in time ------------------------------------------------------------------------------


@cache  # made once for the two tests that feed it to a decoder (a second or two of encoding)
def _slow_png(side: int = 5000) -> bytes:
    """A real image within the pixel limit whose decoding takes seconds (its alpha is put on white and it is
    re-encoded), in a small file: it compresses well."""
    x = np.arange(side) % 256
    arr = np.empty((side, side, 4), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2], arr[..., 3] = x, x[:, None], (x[:, None] + x) % 256, 200
    buf = io.BytesIO()
    Image.fromarray(arr, "RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_decode_past_its_bound_is_a_rejection_and_the_run_goes_on(tmp_path):
    from groundcap import ingest

    slow = _slow_png()
    src = tmp_path / "src"
    src.mkdir()
    for name, data in {"a.png": _png(8), "b_slow.png": slow, "c.png": _png(9)}.items():
        (src / name).write_bytes(data)
    start = time.monotonic()
    images, rejects = _ingest(tmp_path, src, decode_timeout_s=0.3)
    assert time.monotonic() - start < 30
    assert list(images["source_path"]) == ["a.png", "c.png"]  # the decoder killed for b_slow.png was replaced
    assert rejects == {"b_slow.png": "decoding took longer than ingest.source_policy.decode_timeout_s=0.3 s; abandoned"}
    # the same bytes, decoded in process without a bound, are an image: the bound, not the file, refused it
    limits = ingest.Limits.from_params(_params(src)["ingest"])
    assert ingest.validate(slow, limits)["width"] == 5000


@pytest.mark.timeout(60)
def test_a_decoder_killed_mid_file_is_that_files_rejection_and_the_next_file_decodes():
    """The decoder process dying (a decoder's crash, the kernel's OOM killer) costs the file it was decoding."""
    import signal

    from groundcap import ingest

    limits = ingest.Limits.from_params(params.defaults()["ingest"])
    slow = _slow_png()
    with ingest.Decoder(limits, timeout_s=60) as decoder:
        assert decoder.validate(_png(12))["width"] == 48
        killer = threading.Timer(0.3, os.kill, (decoder._proc.pid, signal.SIGKILL))  # the decoder's own child
        killer.start()
        with pytest.raises(ingest.Rejected, match=r"the decoder crashed on this file \(.* exit code -9\)"):
            decoder.validate(slow)
        killer.join()
        assert decoder.validate(_png(13))["width"] == 48
