"""A work folder on object storage: a real S3 server (moto's, started here) holds work/, reports/ and release/.

A map stage's workers write their parts to the store and a global stage runs on the driver's mirror, then
pushes; a part killed between its data and its marker is absent and the re-run computes only it; the lock
is a conditional PUT that refuses a second writer; the credentials turn up in no table, log or error; and
build + card on the store write the bytes a local run writes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from groundcap import params
from groundcap.errors import WorkdirBusy
from groundcap.pipeline import order
from groundcap.pipeline.runner import run_stage
from groundcap.pipeline.stage import Context
from groundcap.storage import parts, writer_lock
from groundcap.storage.remote import RemotePath

BUCKET = "groundcap-test"
KEY_ID, SECRET = "AKIAGROUNDCAPTEST123", "gc-secret-Zq8vN2pL5xR7tY1w"  # moto accepts any credentials


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible server on a free loopback port, with a bucket; the AWS settings point at it."""
    s3fs = pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION":
                            "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            mp.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        if not fs.exists(BUCKET):  # moto keeps its buckets per process: a worker may set this module up twice
            fs.mkdir(BUCKET)
        yield
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture
def url(s3) -> str:
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Four small real photos: two parts of two."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(skimage.data, name)()).resize((128, 96)).save(folder / f"{name}.png")
    return folder


def _params(source: Path | str) -> dict:
    return params.defaults() | {"source": str(source), "part_size": 2}


def _remote_files(url: str, folder: str) -> dict[str, bytes]:
    store = RemotePath.at(url) / folder
    return {p[len(store.path) + 1:]: store.fs.cat_file(p) for p in sorted(store.fs.find(store.path))}


def _local_files(root: Path, folder: str) -> dict[str, bytes]:
    base = root / folder
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_map_stage_on_s3_writes_the_parts_a_local_run_writes(photos, url, tmp_path):
    local = Context(root=tmp_path / "local", params=_params(photos), progress=False)
    shared = Context(root=tmp_path / "mirror", params=_params(photos), progress=False, store=url)
    for ctx in (local, shared):
        for name in ("ingest", "redact"):
            run_stage(ctx, order.stage(name))
    assert _remote_files(url, "work/ingest") == _local_files(local.root, "work/ingest")  # pushed, markers too
    assert _remote_files(url, "reports") == _local_files(local.root, "reports")
    assert _remote_files(url, "work/redact") == _local_files(local.root, "work/redact")
    assert not (shared.root / "work" / "redact").exists()  # the workers wrote to the store, not the driver
    assert parts.list_parts(RemotePath.at(url) / "work" / "redact") == [0, 1]


@pytest.mark.slow
def test_a_run_killed_between_a_parts_data_and_its_marker_leaves_it_absent_and_the_rerun_computes_only_it(
        photos, url, tmp_path):
    ctx = Context(root=tmp_path / "mirror", params=_params(photos), progress=False, store=url)
    run_stage(ctx, order.stage("ingest"))
    killed = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from groundcap import params
        from groundcap.pipeline import order
        from groundcap.pipeline.runner import run_stage
        from groundcap.pipeline.stage import Context
        from groundcap.storage import atomic, parts

        write_text = atomic.write_text
        def dies_before_the_last_marker(path, text, **kw):
            if path.name == "part-00001.done":  # part 1's data is on the store, its marker not yet
                os.kill(os.getpid(), signal.SIGKILL)
            return write_text(path, text, **kw)
        parts.atomic.write_text = dies_before_the_last_marker
        ctx = Context(root=Path({str(ctx.root)!r}), params=params.defaults() | {{"source": "", "part_size": 2}},
                      progress=False, store={url!r})
        run_stage(ctx, order.stage("redact"))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", killed], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == -9, run.stderr[-2000:]
    out = RemotePath.at(url) / "work" / "redact"
    assert (out / "part-00001.parquet").is_file() and parts.list_parts(out) == [0]  # its data, unsealed: absent
    first = (out / "part-00000.parquet").read_bytes()
    report = run_stage(ctx, order.stage("redact"))
    assert (report.parts, report.computed) == (2, 1)
    assert parts.list_parts(out) == [0, 1] and (out / "part-00000.parquet").read_bytes() == first


def test_the_lock_on_s3_is_a_conditional_put_that_refuses_a_second_writer(url, monkeypatch):
    root = RemotePath.at(url)
    lock = root / writer_lock.LOCK
    assert lock.create(b"first") and not lock.create(b"second")
    monkeypatch.setattr(type(root.fs), "exists", lambda self, path, **kw: False)  # only the server can refuse now
    assert not lock.create(b"second") and lock.read_bytes() == b"first"
    monkeypatch.undo()
    lock.unlink()
    with writer_lock.hold(root, "groundcap run"):
        with pytest.raises(WorkdirBusy, match=f"{url} is being written by another groundcap: pid {os.getpid()}"):
            writer_lock.acquire(root, "groundcap run")
    assert not lock.exists()  # released
    dead = writer_lock.holder_record("groundcap run") | {"pid": 2**22 + 1}  # a pid no process has here
    lock.write_text(writer_lock.json.dumps(dead) + "\n")
    with writer_lock.hold(root, "groundcap run"):  # taken over, with a warning
        assert f'"pid": {os.getpid()}' in lock.read_text()


def test_credentials_appear_in_no_table_log_or_error(photos, url, tmp_path, capfd, caplog):
    from groundcap.cli.app import app

    ctx = Context(root=tmp_path / "mirror", params=_params(photos), progress=True, store=url)
    run_stage(ctx, order.stage("ingest"))
    written = b"".join(_remote_files(url, "").values())
    written += b"".join(p.read_bytes() for p in ctx.root.rglob("*") if p.is_file())
    refused = CliRunner().invoke(app, ["run", "--source", str(photos), "--workdir", "s3://no-such-bucket/x",
                                       "--mirror", str(tmp_path / "other"), "-q"])
    assert refused.exit_code == 2 and "no-such-bucket" in refused.output, refused.output
    said = refused.output + "".join(capfd.readouterr()) + caplog.text
    for secret in (KEY_ID, SECRET):
        assert secret.encode() not in written and secret not in said, said[-2000:]


@pytest.mark.slow
def test_build_and_card_on_s3_write_the_release_a_local_run_writes(sample_project, url, tmp_path):
    store = RemotePath.at(url)
    for folder in ("work", "reports"):
        store.fs.put(str(sample_project / folder), (store / folder).path, recursive=True)
    ctx = Context(root=tmp_path / "mirror", params=params.defaults() | {"source": "sample:"}, progress=False,
                  store=url)
    for name in ("build", "card"):
        run_stage(ctx, order.stage(name))
    assert _remote_files(url, "release") == _local_files(sample_project, "release")
