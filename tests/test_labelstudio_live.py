"""The audit through a running Label Studio: our tasks imported by the real server, annotations submitted
through its API, its own JSON export fed to ``groundcap audit import``.

Label Studio (a Django server) clashes with the main venv's pins, so this runs in ``.venv-eco``
(``make test-eco``, which ``make test`` runs); elsewhere the module is skipped, saying so. With
``GROUNDCAP_REQUIRE_ECO`` set a missing ``label-studio`` fails instead. The server runs on loopback
with a throwaway user and API token, its database in a temporary folder, for this module only.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("GROUNDCAP_REQUIRE_ECO"):
    import label_studio  # noqa: F401 - fail loudly: this venv is meant to have it
else:
    pytest.importorskip("label_studio", reason="Label Studio runs in .venv-eco (make test-eco); no label-studio here")

import requests
from typer.testing import CliRunner

from groundcap import audit, masks, params
from groundcap.audit import rle_brush, verdicts
from groundcap.cli.audit import audit_app
from ports import free_port

pytestmark = [pytest.mark.eco, pytest.mark.slow]

USER, PASSWORD, TOKEN = "reviewer@example.org", "throwaway-Passw0rd", "groundcap-test-token-0123456789"
ACCOUNT = ["--username", USER, "--password", PASSWORD, "--user-token", TOKEN, "--enable-legacy-api-token"]
START_TIMEOUT = 300  # a first start migrates a fresh SQLite database: about a minute on two cores


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``label-studio start`` on loopback; yields (base URL, session with the token)."""
    data = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    exe = shutil.which("label-studio", path=str(Path(sys.executable).parent))
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "DJANGO_DB": "sqlite",
           "LATEST_VERSION_CHECK": "false"}  # no call to pypi.org
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen(
        [exe, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port), "--data-dir", str(data),
         *ACCOUNT],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.headers["Authorization"] = f"Token {TOKEN}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"label-studio exited ({proc.returncode}):\n{(data / 'server.log').read_text()[-3000:]}")
            try:
                if session.get(f"{base}/api/version", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"label-studio did not answer in {START_TIMEOUT} s:\n"
                            f"{(data / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield base, session
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_the_readme_starts_label_studio_with_these_flags():
    """README's Label Studio snippet uses the flags the server fixture starts it with."""
    from test_readme_snippets import snippets

    shown = next(s for s in snippets("bash") if "label-studio start" in s)
    flags = {word for word in shown.split() if word.startswith("--")}
    assert flags == {word for word in ACCOUNT if word.startswith("--")}
    assert "groundcap audit import export.json" in shown and "groundcap audit export" in shown


def _ok(response: requests.Response) -> dict | list:
    assert response.ok, f"{response.request.method} {response.url}: {response.status_code} {response.text[:500]}"
    return response.json()


def _annotation(task: dict, verdict: str, *, short: tuple[int, str] | None = None,
                mask: tuple[int, np.ndarray] | None = None) -> dict:
    """What the editor submits when a reviewer keeps the prediction, maybe edits one short caption or
    repaints one mask, and chooses ``verdict``."""
    result = copy.deepcopy(task["predictions"][0]["result"])
    for r in result:
        if short and r["id"] == f"r{short[0]}" and r["from_name"] == "short":
            r["value"]["text"] = [short[1]]
        if mask and r["id"] == f"r{mask[0]}":  # the brush and its per-region text areas carry the same RLE
            r["value"]["rle"] = rle_brush.encode(mask[1])
    result.append({"id": "verdict", "from_name": "verdict", "to_name": "image", "type": "choices",
                   "value": {"choices": [verdict]}})
    return {"result": result}


def _export_and_import(session, base: str, project: dict, tmp_path: Path, root: Path, out: Path):
    """The project's JSON export from the server, imported by ``groundcap audit import``: (export, CLI result)."""
    export = session.get(f"{base}/api/projects/{project['id']}/export", params={"exportType": "JSON"})
    exported = _ok(export)
    file = tmp_path / "label-studio-export.json"
    file.write_bytes(export.content)
    (tmp_path / "params.yaml").write_text(f"audit:\n  verdicts: {tmp_path / 'verdicts.jsonl'}\n")
    result = CliRunner().invoke(audit_app, ["import", str(file), "--root", str(root), "--params",
                                            str(tmp_path / "params.yaml"), "--manifest", str(out / "manifest.json")])
    assert result.exit_code == 0, result.output
    return exported, result


def test_tasks_round_trip_through_a_running_label_studio(server, sample_project, tmp_path):
    base, session = server
    root = sample_project
    out = tmp_path / "audit"
    manifest = audit.export(root, params.load(None), out)
    tasks = json.loads((out / "tasks.json").read_text())
    items = {item["image_id"]: item for item in manifest["items"]}
    with_regions = [t for t in tasks if items[t["data"]["image_id"]]["regions"]]
    assert len(with_regions) >= 4

    project = _ok(session.post(f"{base}/api/projects", json={
        "title": "groundcap audit", "label_config": (out / "labeling_config.xml").read_text()}))
    imported = _ok(session.post(f"{base}/api/projects/{project['id']}/import", json=tasks))
    assert (imported["task_count"], imported["prediction_count"]) == (len(tasks), len(tasks))
    listed = _ok(session.get(f"{base}/api/tasks", params={"project": project["id"], "page_size": 1000}))
    server_tasks = {t["data"]["image_id"]: t for t in listed["tasks"]}
    assert set(server_tasks) == set(items)

    accepted, rejected, captioned, repainted = (t["data"]["image_id"] for t in with_regions[:4])
    caption_rid = int(next(iter(items[captioned]["regions"])))
    mask_rid = int(next(iter(items[repainted]["regions"])))
    original = masks.decode(items[repainted]["regions"][str(mask_rid)]["segmentation"]).astype(bool)
    new_mask = original.copy()
    ys, xs = np.nonzero(original)
    new_mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True  # the reviewer fills the region's box
    if np.array_equal(new_mask, original):
        new_mask[0, 0] = not new_mask[0, 0]
    by_id = {t["data"]["image_id"]: t for t in tasks}
    submissions = {
        accepted: _annotation(by_id[accepted], "accept"),
        rejected: _annotation(by_id[rejected], "reject"),
        captioned: _annotation(by_id[captioned], "edited", short=(caption_rid, "a caption a person wrote")),
        repainted: _annotation(by_id[repainted], "edited", mask=(mask_rid, new_mask)),
    }
    for image_id, annotation in submissions.items():
        _ok(session.post(f"{base}/api/tasks/{server_tasks[image_id]['id']}/annotations", json=annotation))

    exported, result = _export_and_import(session, base, project, tmp_path, root, out)
    assert sum(bool(t["annotations"]) for t in exported) == 4
    assert "imported 4 verdicts" in result.output

    records = verdicts.load(root, {"audit": {"verdicts": str(tmp_path / "verdicts.jsonl")}})
    assert {i: records[i]["verdict"] for i in submissions} == {
        accepted: "accept", rejected: "reject", captioned: "edited", repainted: "edited"}
    assert records[accepted]["regions"] == {} and records[rejected]["regions"] == {}
    assert records[captioned]["regions"] == {str(caption_rid): {"short": "a caption a person wrote", "detailed": None}}
    fixed = records[repainted]["regions"][str(mask_rid)]
    assert (fixed["short"], fixed["detailed"]) == (None, None)
    assert np.array_equal(masks.decode(fixed["segmentation"]).astype(bool), new_mask)
    assert all(records[i]["source"] == "label_studio" and records[i]["annotator"] for i in submissions)


def _drawn(kind: str, ident: str, task: dict, texts: dict[str, str], geometry: dict) -> list[dict]:
    """An entity the reviewer drew as ``new`` (brush or polygon) and the per-region texts written for it."""
    first = task["predictions"][0]["result"][0]
    common = {"id": ident, "to_name": "image", "image_rotation": 0, "original_width": first["original_width"],
              "original_height": first["original_height"]}
    name, control = ("brushlabels", "region") if kind == "brush" else ("polygonlabels", "outline")
    return [{**common, "from_name": control, "type": name, "value": {**geometry, name: ["new"]}}] + [
        {**common, "from_name": k, "type": "textarea", "value": {**geometry, "text": [t]}} for k, t in texts.items()]


def test_drawn_entities_and_a_relabel_round_trip_through_a_running_label_studio(server, sample_project, tmp_path):
    """A reviewer relabels a region and draws two entities the engine missed, one with the brush and one with
    the polygon tool, each with the captions they wrote: Label Studio's export imports as ``added`` entities
    with their own region ids, and they reach human_test with ``source: human``."""
    from groundcap.builders import columns

    base, session = server
    out = tmp_path / "audit"
    manifest = audit.export(sample_project, params.load(None), out)
    tasks = json.loads((out / "tasks.json").read_text())
    item = next(i for i in manifest["items"] if i["regions"] and i["qa_passed"])
    task = next(t for t in tasks if t["data"]["image_id"] == item["image_id"])
    project = _ok(session.post(f"{base}/api/projects", json={
        "title": "groundcap curation", "label_config": (out / "labeling_config.xml").read_text()}))
    _ok(session.post(f"{base}/api/projects/{project['id']}/import", json=[task]))
    (server_task,) = _ok(session.get(f"{base}/api/tasks", params={"project": project["id"]}))["tasks"]

    h, w = item["height"], item["width"]
    brushed = np.zeros((h, w), bool)
    brushed[h // 2:h // 2 + 16, w // 4:w // 4 + 24] = True
    rid = int(next(iter(item["regions"])))
    annotation = _annotation(task, "accept")
    brush = next(r for r in annotation["result"] if r["id"] == f"r{rid}" and r["type"] == "brushlabels")
    annotation["result"] = [r for r in annotation["result"] if (r["id"], r["from_name"]) != (f"r{rid}", "label")]
    annotation["result"].append({**brush, "from_name": "label", "type": "textarea",
                                 "value": {"format": "rle", "rle": brush["value"]["rle"], "text": ["lamp post"]}})
    annotation["result"] += _drawn("brush", "drawn1", task, {"label": "kite", "short": "a red kite",
                                                             "detailed": "A red kite with a long tail."},
                                   {"format": "rle", "rle": rle_brush.encode(brushed)})
    annotation["result"] += _drawn("polygon", "drawn2", task, {"label": "sky", "short": "a patch of sky",
                                                               "detailed": "Pale blue sky along the top edge."},
                                   {"points": [[10, 2], [60, 2], [60, 20], [10, 20]], "closed": True})
    _ok(session.post(f"{base}/api/tasks/{server_task['id']}/annotations", json=annotation))
    _export_and_import(session, base, project, tmp_path, sample_project, out)
    p = {"audit": {"verdicts": str(tmp_path / "verdicts.jsonl")}}
    record = verdicts.load(sample_project, p)[item["image_id"]]
    assert record["verdict"] == "edited" and record["regions"][str(rid)]["label"] == "lamp post"
    sky, kite = record["added"]
    first = item["next_region_id"]
    assert (sky["region_id"], kite["region_id"]) == (first, first + 1)
    assert (kite["label"], kite["short"], sky["short"]) == ("kite", "a red kite", "a patch of sky")
    assert np.array_equal(masks.decode(kite["segmentation"]).astype(bool), brushed)
    x, y, bw, bh = masks.bbox(sky["segmentation"])
    assert (x, y, x + bw, y + bh) == pytest.approx((0.1 * w, 0.02 * h, 0.6 * w + 1, 0.2 * h + 1), abs=1.5)

    from groundcap.storage import parts

    index = next(i for i in parts.list_parts(sample_project / "work/ingest")
                 if item["image_id"] in {r["image_id"] for r in parts.read_part(sample_project / "work/ingest", i,
                                                                                ["image_id"])})
    batch = columns.join_part(sample_project / "work", index, verdicts.human_test(sample_project, p))
    row = next(r for r in batch.to_pylist() if r["image_id"] == item["image_id"])
    human = [r for r in row["regions"] if r["source"] == "human"]
    assert [(r["region_id"], r["short_caption"]) for r in human] == [(first, "a patch of sky"),
                                                                      (first + 1, "a red kite")]
    assert next(r for r in row["regions"] if r["region_id"] == rid)["label"] == "lamp post"
