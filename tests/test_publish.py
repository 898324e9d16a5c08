"""``groundcap publish``: to a loopback fake Hub (the real CLI, in subprocesses) and to folders/fsspec URLs.

The Hub runs check what reached the server (paths, headers, commits, tags), not only what was printed.
Each CLI run costs ~4 s of imports, so the Hub scenarios run concurrently, once per module, and the
tests below assert on what each one did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard
from typer.testing import CliRunner

from conftest import opt_in_formats
from fakehub import GITATTRIBUTES, FakeHub, HubError, Request
from groundcap.builders.checksums import MANIFEST, verify_manifest, write_manifest
from groundcap.cli.app import app
from groundcap.releases.versions import CHANGELOG

TOKEN = "hf_groundcapTESTsecret7f3a9c"  # recognisable: it must show up nowhere in any output
REPO = "acme/grounded-captions"
V1, V2 = "0.1.0", "0.2.0"


# --- releases ------------------------------------------------------------------------------------------


def _release(src: Path, dest: Path, version: str, previous: str | None = None) -> Path:
    """A copy of ``src`` built as ``version`` (changelog set, manifest rewritten)."""
    shutil.copytree(src, dest)
    (dest / CHANGELOG).write_text(json.dumps([{"version": version, "previous": previous}]), encoding="utf-8")
    write_manifest(dest)
    return dest


@dataclass(frozen=True)
class Releases:
    v1: Path
    v2: Path  # v1 with coco/test.json changed and one WebDataset shard renamed (its old name is stale)
    stale: str  # the path v1 has and v2 has not
    tampered: Path  # v1 with a file changed after its manifest was written


@pytest.fixture(scope="module")
def releases(sample_project: Path, tmp_path_factory) -> Releases:
    root = tmp_path_factory.mktemp("releases")
    v1 = _release(sample_project / "release", root / "v1", V1)
    write_manifest(opt_in_formats(sample_project, v1))  # with the opt-in formats (build.formats)
    (v1 / ".gitignore").write_text("/wds\n")  # dotfiles are no part of a release (DVC writes this one)
    v2 = shutil.copytree(v1, root / "v2-src")
    changed = v2 / "coco" / "test.json"
    changed.write_bytes(changed.read_bytes() + b"\n")
    shard = min((v2 / "wds").glob("*.tar"))
    shard.rename(shard.with_name("resharded-" + shard.name))
    tampered = shutil.copytree(v1, root / "tampered")
    (tampered / "coco" / "test.json").write_bytes(changed.read_bytes())
    return Releases(v1=v1, v2=_release(v2, root / "v2", V2, previous=V1),
                    stale=shard.relative_to(v2).as_posix(), tampered=tampered)


def _published_files(release: Path) -> dict[str, bytes]:
    """What a publish of ``release`` must hold: the manifest's files plus the manifest."""
    listed = [entry["path"] for entry in json.loads((release / MANIFEST).read_text())]
    return {rel: (release / rel).read_bytes() for rel in [*listed, MANIFEST]}


# --- the Hub scenarios -------------------------------------------------------------------------------------


@dataclass
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    requests: list[Request]  # what reached the fake Hub during this run


def _cli(hub: FakeHub, tmp: Path, version: str, release: Path, *extra: str, token: str | None = TOKEN,
         target: tuple[str, ...] = ("--repo", REPO), **env: str) -> Run:
    """``groundcap publish --repo REPO ...`` (or another ``target``) in a subprocess pointed at the fake Hub."""
    args = (*target, "--version", version, "--release", str(release), *extra)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "GROUNDCAP_"))}
    environ |= dict(HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp / "hf"),
                    HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", **env)
    if token:
        environ["HF_TOKEN"] = token
    seen = len(hub.requests)
    proc = subprocess.run([sys.executable, "-m", "groundcap", "publish", *args], env=environ,
                          capture_output=True, text=True, timeout=120, check=False)
    return Run(args, proc.returncode, proc.stdout, proc.stderr, hub.requests[seen:])


def _lifecycle(hub, tmp, r: Releases) -> list[Run]:
    """v1 (to a new private repo), v1 again (refused), then v2."""
    return [_cli(hub, tmp, version, release, *extra)
            for version, release, *extra in ((V1, r.v1, "--private"), (V1, r.v1), (V2, r.v2))]


def _server_error(debug: str, target: tuple[str, ...] = ("--repo", REPO)):
    def scenario(hub, tmp, r: Releases) -> list[Run]:
        hub.fail_status = 500  # every answer echoes the request's Authorization header
        return [_cli(hub, tmp, V1, r.v1, target=target, GROUNDCAP_DEBUG=debug)]

    return scenario


def _tag_race(hub, tmp, r: Releases) -> list[Run]:
    """Someone else tags v0.1.0 (at the repo's first commit) between our commit and our tag."""
    hub.before_tag = lambda repo, tag: repo.tags.setdefault(tag, next(iter(repo.commits)))
    return [_cli(hub, tmp, V1, r.v1)]


def _resume(hub, tmp, r: Releases) -> list[Run]:
    """The tag fails once (the commit is made); publishing again tags that commit, committing nothing."""
    def fail_once(repo, tag):
        hub.before_tag = None
        raise HubError(503, "tag service unavailable")

    hub.before_tag = fail_once
    return [_cli(hub, tmp, V1, r.v1) for _ in range(2)]


SCENARIOS = {
    "lifecycle": _lifecycle,
    "resume": _resume,
    "server_error": _server_error(""),
    "server_error_debug": _server_error("1"),
    "folder_server_error": _server_error("", ("--to", f"hf://datasets/{REPO}")),  # the fsspec route to the Hub
    "folder_server_error_debug": _server_error("1", ("--to", f"hf://datasets/{REPO}")),
    "tag_race": _tag_race,
    "no_token": lambda hub, tmp, r: [_cli(hub, tmp, V1, r.v1, token=None)],
    "wrong_version": lambda hub, tmp, r: [_cli(hub, tmp, V2, r.v1)],
    "tampered": lambda hub, tmp, r: [_cli(hub, tmp, V1, r.tampered)],
    "dry_run": lambda hub, tmp, r: [_cli(hub, tmp, V1, r.v1, "--dry-run")],
}


@dataclass
class Outcome:
    hub: FakeHub
    runs: list[Run]


@pytest.fixture(scope="module")
def hub_runs(releases: Releases, tmp_path_factory) -> dict[str, Outcome]:
    """Every scenario against its own fake Hub, all at once."""
    def play(name: str) -> Outcome:
        with FakeHub(TOKEN) as hub:
            return Outcome(hub, SCENARIOS[name](hub, tmp_path_factory.mktemp(name), releases))

    with ThreadPoolExecutor(len(SCENARIOS)) as pool:
        return dict(zip(SCENARIOS, pool.map(play, SCENARIOS), strict=True))


def _commit_requests(run: Run) -> list[Request]:
    return [r for r in run.requests if r.method == "POST" and "/commit/" in r.path]


def test_publish_sends_only_dataset_requests_each_authorised(hub_runs):
    """Every call names the dataset repo; the token goes to the Hub API only, never to the presigned upload."""
    requests = [r for outcome in hub_runs.values() for r in outcome.hub.requests]
    assert [r for r in requests if r.method == "PUT"]
    for r in requests:
        if r.path == "/api/repos/create":
            assert r.json["type"] == "dataset" and f"{r.json['organization']}/{r.json['name']}" == REPO
        elif r.path == "/api/validate-yaml":
            assert r.json["repoType"] == "dataset"
        else:
            assert r.path == f"/api/datasets/{REPO}" or r.path.startswith(  # its info (hf:// reads it), or below
                (f"/api/datasets/{REPO}/", f"/datasets/{REPO}.git/info/lfs/")), r.path
        if r.method == "PUT":
            assert "authorization" not in r.headers and r.query["signature"]
        else:
            assert r.headers["authorization"] == f"Bearer {TOKEN}", r.path


def test_tag_points_at_the_uploaded_commit_holding_exactly_the_release(hub_runs, releases):
    outcome = hub_runs["lifecycle"]
    first = outcome.runs[0]
    assert first.returncode == 0, first.stderr
    repo = outcome.hub.repos[REPO]
    initial, commit = list(repo.commits)[:2]
    assert repo.tags["v0.1.0"] == commit and repo.parents[commit] == initial
    assert repo.messages[commit] == "Release v0.1.0 (groundcap)" and repo.visibility == "private"
    assert len(_commit_requests(first)) == 1
    assert [r.path for r in first.requests if "/tag/" in r.path] == [f"/api/datasets/{REPO}/tag/{commit}"]
    assert repo.commits[commit] == _published_files(releases.v1) | {".gitattributes": GITATTRIBUTES}
    assert f"commit {commit}" in first.stdout
    assert f'load_dataset("{REPO}", revision="v0.1.0")' in first.stdout


def test_republishing_a_version_is_refused_without_a_commit(hub_runs):
    outcome = hub_runs["lifecycle"]
    again = outcome.runs[1]
    commit = outcome.hub.repos[REPO].tags["v0.1.0"]
    assert again.returncode == 2
    assert f"tag v0.1.0 already exists on {REPO} at commit {commit[:7]}" in again.stderr
    assert not _commit_requests(again) and not [r for r in again.requests if "/tag/" in r.path]


def test_next_version_gets_its_own_commit_and_tag_and_drops_stale_files(hub_runs, releases):
    outcome = hub_runs["lifecycle"]
    second = outcome.runs[2]
    assert second.returncode == 0, second.stderr
    repo = outcome.hub.repos[REPO]
    v1, v2 = repo.tags["v0.1.0"], repo.tags["v0.2.0"]
    assert v1 == list(repo.commits)[1] and v2 != v1 and repo.parents[v2] == v1  # one commit, v1 untouched
    assert len(_commit_requests(second)) == 1
    assert releases.stale in repo.commits[v1] and releases.stale not in repo.commits[v2]
    assert repo.commits[v2] == _published_files(releases.v2) | {".gitattributes": GITATTRIBUTES}
    assert repo.commits[v1] == _published_files(releases.v1) | {".gitattributes": GITATTRIBUTES}


def test_token_is_never_printed(hub_runs):
    """Success, refusal, a server echoing the Authorization header in a 500, with GROUNDCAP_DEBUG too."""
    runs = [run for outcome in hub_runs.values() for run in outcome.runs]
    assert len(runs) == 14
    for run in runs:
        assert TOKEN not in run.stdout + run.stderr, run.args
    for route in ("server_error", "folder_server_error"):
        echoed = hub_runs[route].runs[0]
        assert echoed.returncode == 2 and "500" in echoed.stderr and "Authorization: ***" in echoed.stderr, route
        assert "Traceback" not in echoed.stderr and len(echoed.stderr.strip().splitlines()) <= 3, echoed.stderr
        assert echoed.requests and all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in echoed.requests)
        debug = hub_runs[f"{route}_debug"].runs[0]
        assert debug.returncode == 1 and "PublishError" in debug.stderr and "Traceback" in debug.stderr, route
        assert "During handling" not in debug.stderr and "direct cause" not in debug.stderr


def test_no_token_is_a_clear_error(hub_runs):
    run = hub_runs["no_token"].runs[0]
    assert run.returncode == 2 and "no Hugging Face token found: set HF_TOKEN" in run.stderr
    assert not run.requests


@pytest.mark.parametrize("scenario, message", [
    ("wrong_version", "was built as 0.1.0, not 0.2.0: set release.version in params.yaml and rebuild"),
    ("tampered", "does not match its checksums.json (size differs: coco/test.json): rebuild with `dvc repro`"),
])
def test_a_release_that_fails_its_checks_is_refused_before_any_request(hub_runs, scenario, message):
    run = hub_runs[scenario].runs[0]
    assert run.returncode == 2 and message in run.stderr
    assert not run.requests


def test_a_tag_created_meanwhile_is_reported(hub_runs):
    outcome = hub_runs["tag_race"]
    run = outcome.runs[0]
    repo = outcome.hub.repos[REPO]
    assert run.returncode == 2 and f"tag v0.1.0 was created on {REPO} while this publish ran" in run.stderr
    assert repo.tags["v0.1.0"] == next(iter(repo.commits))  # theirs, not moved


def test_a_publish_whose_tag_failed_is_finished_by_running_it_again(hub_runs):
    outcome = hub_runs["resume"]
    failed, again = outcome.runs
    repo = outcome.hub.repos[REPO]
    assert failed.returncode == 2 and "503" in failed.stderr and len(_commit_requests(failed)) == 1
    assert again.returncode == 0, again.stderr
    assert not _commit_requests(again) and len(repo.commits) == 2
    assert repo.tags["v0.1.0"] == list(repo.commits)[1]


def test_dry_run_lists_the_plan_and_loads_every_config_without_a_request(hub_runs, releases):
    run = hub_runs["dry_run"].runs[0]
    assert run.returncode == 0, run.stderr
    assert not run.requests
    assert "tag     v0.1.0" in run.stdout and f"Hub dataset repo {REPO}" in run.stdout
    for rel in _published_files(releases.v1):
        assert f"  {rel}\n" in run.stdout
    assert "total (" in run.stdout
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines() if line.startswith("config "))
    for info in DatasetCard.load(releases.v1 / "README.md").data.get("dataset_info"):
        for split in info["splits"]:
            assert f"{split['name']} {split['num_examples']} rows" in lines[f"config {info['config_name']}"]


# --- folder and fsspec targets (in process: memory:// lives in this process) -------------------------------


def _publish(*args: str):
    return CliRunner().invoke(app, ["publish", *args])


def test_help():
    result = _publish("--help")
    assert result.exit_code == 0 and "--repo" in result.output and "--to" in result.output


@pytest.mark.parametrize("args", [["--version", V1], ["--version", V1, "--repo", REPO, "--to", "/tmp/x"]])
def test_exactly_one_target(args):
    result = _publish(*args)
    assert result.exit_code == 2 and "exactly one target" in result.output


def _configs(release: Path) -> list[str]:
    return [config["config_name"] for config in DatasetCard.load(release / "README.md").data.configs]


def _load(path: Path, config: str, cache: Path) -> dict:
    splits = load_dataset(str(path), config, cache_dir=str(cache))
    return {name: (ds.features, ds.num_rows, list(ds["image_id"])) for name, ds in splits.items()}


def test_folder_publish_loads_like_the_release(releases, tmp_path):
    result = _publish("--to", str(tmp_path / "pub"), "--version", V1, "--release", str(releases.v1))
    assert result.exit_code == 0, result.output
    published = tmp_path / "pub" / "v0.1.0"
    assert f'load_dataset("{published}", "regions")' in result.output
    assert {p.relative_to(published).as_posix(): p.read_bytes() for p in published.rglob("*") if p.is_file()} \
        == _published_files(releases.v1)
    assert verify_manifest(published) == []
    for config in _configs(releases.v1):
        assert _load(published, config, tmp_path / "a") == _load(releases.v1, config, tmp_path / "b")


def test_folder_publish_is_refused_once_published(releases, tmp_path):
    args = ("--to", str(tmp_path), "--version", V1, "--release", str(releases.v1))
    assert _publish(*args).exit_code == 0
    again = _publish(*args)
    assert again.exit_code == 2 and "already holds a published release" in again.output


def test_folder_publish_rewrites_an_interrupted_one(releases, tmp_path):
    """A version folder without its manifest is a publish that died: cleared, then written whole."""
    partial = tmp_path / "v0.1.0"
    (partial / "data").mkdir(parents=True)
    (partial / "data" / "left-over.parquet").write_bytes(b"half a shard")
    (partial / "README.md").write_text("truncated")
    result = _publish("--to", f"file://{tmp_path}", "--version", V1, "--release", str(releases.v1))
    assert result.exit_code == 0, result.output
    assert not (partial / "data" / "left-over.parquet").exists()
    assert verify_manifest(partial) == []


def test_memory_url(releases, tmp_path):
    url = f"memory://groundcap-test-{tmp_path.name}"
    result = _publish("--to", url, "--version", V1, "--release", str(releases.v1))
    assert result.exit_code == 0, result.output
    fs, root = fsspec.core.url_to_fs(f"{url}/v0.1.0")
    try:
        assert {path[len(root) + 1:]: fs.cat_file(path) for path in fs.find(root)} == _published_files(releases.v1)
        assert f'load_dataset("{url.replace("://", ":///")}/v0.1.0")' in result.output
    finally:
        fs.rm(root, recursive=True)


# --- diff against the Hub ------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hub_state", ["no such repo", "server error", "unreachable"])
def test_diff_ends_a_hub_error_in_one_redacted_line(hub_state, tmp_path, monkeypatch):
    """`groundcap diff hf://...` reads through the Hub's fsspec filesystem: a repo that is not there, a server
    error that echoes the request's Authorization, or an endpoint out of reach is one line and exit 2."""
    from huggingface_hub import HfFileSystem, constants

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # make test exports HF_HUB_OFFLINE=1
    with FakeHub(TOKEN) as hub:
        hub.fail_status = 500 if hub_state == "server error" else None
        endpoint = f"http://127.0.0.1:{_closed_port()}" if hub_state == "unreachable" else hub.endpoint
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        HfFileSystem.clear_instance_cache()
        try:
            result = CliRunner().invoke(app, ["diff", f"hf://datasets/{REPO}@v{V1}", str(tmp_path)])
        finally:
            HfFileSystem.clear_instance_cache()
        assert hub.requests or hub_state == "unreachable"
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.output.startswith(f"error: reading hf://datasets/{REPO}@v{V1} failed: ")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output and TOKEN not in result.output
    assert {"no such repo": "repository not found", "server error": "500",
            "unreachable": "Connect"}[hub_state] in result.output


def _closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
