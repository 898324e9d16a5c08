"""Human-sampled audits on the real sample pipeline: the sample, the gallery in a real browser, Label Studio's
own decoder and validator, verdicts in both formats, the error rates and the release gate."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from groundcap import audit, masks, params
from groundcap.audit import gallery, labelstudio, rle_brush, sample, verdicts
from groundcap.cli.audit import audit_app
from groundcap.pipeline.runner import run_all
from groundcap.pipeline.stage import Context

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def root(sample_project) -> Path:
    """The bundled sample's project, every stage run (conftest)."""
    return sample_project


@pytest.fixture(scope="module")
def exported(root) -> dict:
    return audit.export(root, params.load(None))


def _params(tmp_path: Path, **audit_section) -> dict:
    p = params.load(None)
    p["audit"] |= {"verdicts": str(tmp_path / "verdicts.jsonl"), **audit_section}
    return p


def _ls_brush():
    """Label Studio's own brush codec, loaded by path (the SDK package itself pulls heavy dependencies)."""
    spec = importlib.util.find_spec("label_studio_sdk")
    if spec is None:
        pytest.skip("label-studio-sdk is not installed (pip install --no-deps label-studio-sdk)")
    path = Path(spec.submodule_search_locations[0]) / "converter" / "brush.py"
    module_spec = importlib.util.spec_from_file_location("ls_brush", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


# --- the sample -------------------------------------------------------------------------------------


def test_allocation_is_proportional_with_one_per_stratum_and_never_overdraws():
    assert sample.allocate({"a": 90, "b": 9, "c": 1, "d": 0}, 10) == {"a": 8, "b": 1, "c": 1}
    assert sample.allocate({"a": 2, "b": 1}, 50) == {"a": 2, "b": 1}
    assert sample.allocate({"a": 5, "b": 7, "c": 6}, 2) == {"b": 1, "c": 1}
    counts = sample.allocate({f"s{i}": i for i in range(1, 30)}, 100)
    assert sum(counts.values()) == 100 and all(0 < counts[f"s{i}"] <= i for i in range(1, 30))


def test_stratum_bands():
    assert sample.source_group("sample:coffee.png") == "sample"
    assert sample.source_group("https://example.org/a/b.jpg") == "example.org"
    assert sample.source_group("cats/tabby/1.jpg") == "cats" and sample.source_group("1.jpg") == "."
    assert sample.stratum("x", 3, 20, 0.59) == "source x | regions 1-3 | words <=20 | qa <0.6"
    assert sample.stratum("x", 4, 21, 0.6) == "source x | regions 4-8 | words 21-60 | qa 0.6-0.8"
    assert sample.stratum("x", 9, 61, 0.8) == "source x | regions 9+ | words >60 | qa >=0.8"


def test_stratified_sample_is_deterministic_and_covers_every_stratum(root, exported):
    everyone = list(sample.candidates(root))
    strata = {c.stratum for c in everyone}
    small = sample.draw(root, len(strata), seed=7)
    assert small == sample.draw(root, len(strata), seed=7)
    assert {c.stratum for c in small.items} == strata  # one per stratum when the size allows
    drawn = sample.draw(root, 60, seed=7, failed_share=0.1)
    assert [i["image_id"] for i in exported["items"]] == [c.image_id for c in drawn.items]
    assert exported["population"] == dict(sorted((s, sum(c.stratum == s for c in everyone)) for s in strata))
    other = [c.image_id for c in sample.draw(root, 3, seed=8).items]
    assert len(other) == 3 and set(other) <= {c.image_id for c in everyone}


def test_export_writes_the_same_bytes_twice(root, exported, tmp_path):
    audit.export(root, params.load(None), out=tmp_path / "again")
    first = sorted(p.relative_to(root / "audit") for p in (root / "audit").rglob("*") if p.is_file())
    assert first == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    for rel in first:
        assert (root / "audit" / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
    assert {p.stem for p in (root / "audit/images").iterdir()} == {i["image_id"] for i in exported["items"]}


# --- the gallery ------------------------------------------------------------------------------------


def _screenshot(page: Path, png: Path, profile: Path) -> np.ndarray:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1280,2000", f"--screenshot={png}",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]
    return np.asarray(Image.open(png).convert("RGB")).astype(np.int32)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("GROUNDCAP_REQUIRE_BROWSER"),
                    reason="chromium is not installed (apt-get install chromium)")
def test_gallery_renders_in_headless_chromium_with_visible_overlays(root, exported, tmp_path):
    assert CHROMIUM, "GROUNDCAP_REQUIRE_BROWSER is set but chromium is not installed"
    page = (root / "audit/gallery.html").read_text()
    assert "http://" not in page and "https://" not in page and "src=\"data:image/png;base64," in page
    bare = tmp_path / "bare.html"  # the same page without the overlays: what they add is what we check
    bare.write_text(re.sub(r'<img class="overlay"[^>]*>', "", page))
    shot = _screenshot(root / "audit/gallery.html", tmp_path / "shot.png", tmp_path / "profile")
    base = _screenshot(bare, tmp_path / "bare.png", tmp_path / "profile")

    assert shot.std() > 20 and (shot.max(axis=2) - shot.min(axis=2)).mean() > 5  # neither blank nor grey
    changed = np.abs(shot - base).max(axis=2) > 8
    assert changed.sum() > 20_000, "the overlays change too little of the page"
    # every changed pixel is a region colour over the image: half-opaque fill, or the opaque outline
    colours = np.array([gallery.rgb(c) for c in gallery.PALETTE])[:, None, :]
    over, under = shot[changed][None], base[changed][None]
    alpha = gallery.FILL_ALPHA / 255
    fill = np.abs(over - (alpha * colours + (1 - alpha) * under)).max(axis=2).min(axis=0)
    outline = np.abs(over - colours).max(axis=2).min(axis=0)
    explained = np.minimum(fill, outline) <= 12
    assert explained.mean() > 0.95, f"only {explained.mean():.1%} of the overlay pixels are region colours"
    first = exported["items"][0]
    used = {gallery.color(int(r)) for r in first["regions"]}
    best = np.argmin(np.minimum(np.abs(over - (alpha * colours + (1 - alpha) * under)).max(axis=2),
                                np.abs(over - colours).max(axis=2)), axis=0)
    assert used <= {gallery.PALETTE[i] for i in np.unique(best[explained])}


def test_scene_caption_references_are_marked_and_escaped():
    out = gallery.scene_html('A <r2>dog & "cat"</r2> near <r10>a <b> tree</r10>.')
    assert out.count('class="ref"') == 2 and "&amp;" in out and "&lt;b&gt;" in out and "<b>" not in out
    assert f"border-color:{gallery.color(10)}" in out and out.endswith(".")


# --- Label Studio -----------------------------------------------------------------------------------


def test_brush_rle_is_label_studio_encoding_and_round_trips(root, exported):
    brush = _ls_brush()
    rng = np.random.default_rng(0)
    cases = [rng.random((37, 53)) > 0.6, np.zeros((300, 400), bool), np.ones((512, 300), bool)]
    rows = sample.read_rows(root, {exported["items"][0]["image_id"]})
    cases += [masks.decode(r["segmentation"]) for item in rows.values() for r in item["regions"]]
    for mask in cases:
        ours = rle_brush.encode(mask)
        assert ours == brush.mask2rle(mask.astype(np.uint8) * 255)
        decoded = brush.decode_rle(ours).reshape(*mask.shape, 4)
        assert (decoded == (mask * 255)[..., None]).all()


def _config_names(xml: str) -> tuple[dict[str, str], set[str]]:
    tree = ET.fromstring(xml)
    controls = {e.get("name"): e.tag for e in tree.iter() if e.get("toName")}
    objects = {e.get("name") for e in tree.iter() if e.get("name") and not e.get("toName")}
    return controls, objects


def test_tasks_match_the_label_studio_import_format(root, exported):
    xml = (root / "audit/labeling_config.xml").read_text()
    tasks = json.loads((root / "audit/tasks.json").read_text())
    controls, objects = _config_names(xml)
    labels = {e.get("value") for e in ET.fromstring(xml).iter("Label")}
    assert isinstance(tasks, list) and len(tasks) == len(exported["items"])
    for task, item in zip(tasks, exported["items"], strict=True):
        assert task["data"]["image_id"] == item["image_id"]
        assert task["data"]["image"].startswith(labelstudio.DEFAULT_URL_PREFIX)
        (prediction,) = task["predictions"]
        brushes = [r for r in prediction["result"] if r["type"] == "brushlabels"]
        assert {r["id"] for r in brushes} == {f"r{rid}" for rid in item["regions"]}
        for r in prediction["result"]:
            assert r["from_name"] in controls and r["to_name"] in objects
            assert r["type"] == controls[r["from_name"]].lower()
            assert (r["original_width"], r["original_height"]) == tuple(
                Image.open(root / "audit/images" / Path(task["data"]["image"]).name).size)
        for r in brushes:
            assert r["value"]["format"] == "rle" and set(r["value"]["brushlabels"]) <= labels
            assert all(isinstance(b, int) and 0 <= b < 256 for b in r["value"]["rle"])


def test_tasks_validate_with_label_studio_label_interface(root):
    try:
        from label_studio_sdk.label_interface import LabelInterface
    except ImportError as exc:
        pytest.skip(f"label_studio_sdk.label_interface is not importable here ({exc})")
    interface = LabelInterface((root / "audit/labeling_config.xml").read_text())
    interface.validate()
    for task in json.loads((root / "audit/tasks.json").read_text()):
        for obj in interface.objects:
            assert not obj.value_is_variable or task["data"].get(obj.value_name) is not None, obj.value_name
        for prediction in task["predictions"]:
            assert interface.validate_prediction(prediction, return_errors=True) == []
    broken = copy.deepcopy(task["predictions"][0])
    broken["result"][0]["value"]["brushlabels"] = ["no-such-region"]
    assert interface.validate_prediction(broken, return_errors=True)


def _annotation(task: dict, verdict: str, **edits) -> dict:
    """What Label Studio exports after a reviewer kept the prediction, edited text and chose ``verdict``."""
    result = copy.deepcopy(task["predictions"][0]["result"])
    for r in result:
        key = "scene" if r["from_name"] == "scene_caption" else f"{r['id']}_{r['from_name']}"
        if key in edits:
            r["value"]["text"] = [edits[key]]
        r["id"] = f"x{r['id']}"  # the editor may give regions new ids: the labels still say which is which
    result.append({"id": "v1", "from_name": "verdict", "to_name": "image", "type": "choices",
                   "value": {"choices": [verdict]}, "origin": "manual"})
    return {"id": 1, "completed_by": {"id": 3, "email": "reviewer@example.org"}, "was_cancelled": False,
            "updated_at": "2025-01-02T10:00:00Z", "result": result}


def test_label_studio_export_round_trips_into_verdicts_and_human_test(root, exported, tmp_path):
    tasks = json.loads((root / "audit/tasks.json").read_text())
    assert len(tasks) >= 5
    ids = [t["data"]["image_id"] for t in tasks]
    rid = next(iter(exported["items"][1]["regions"]))
    scene = tasks[2]["data"]["scene_caption"]
    export = [copy.deepcopy(t) for t in tasks]
    export[0]["annotations"] = [_annotation(tasks[0], "accept")]
    export[1]["annotations"] = [_annotation(tasks[1], "edited", **{f"r{rid}_short": "a corrected caption"})]
    export[2]["annotations"] = [_annotation(tasks[2], "accept", scene=scene + " Edited by a person.")]
    export[3]["annotations"] = [_annotation(tasks[3], "reject"),
                                {**_annotation(tasks[3], "accept"), "id": 2, "was_cancelled": True}]
    export[4]["annotations"] = [{**_annotation(tasks[4], "reject"), "updated_at": "2025-01-01T00:00:00Z"},
                                {**_annotation(tasks[4], "accept"), "id": 7}]  # the later one counts
    for t in export[5:]:
        t["annotations"] = []  # not reviewed yet
    file = tmp_path / "export.json"
    file.write_text(json.dumps(export))
    p = _params(tmp_path)

    summary = verdicts.import_file(root, p, file, "auto", exported)
    assert summary["imported"] == 5 and summary["audited"] == 5
    records = verdicts.load(root, p)
    assert [records[i]["verdict"] for i in ids[:5]] == ["accept", "edited", "edited", "reject", "accept"]
    assert records[ids[1]]["regions"] == {rid: {"short": "a corrected caption", "detailed": None}}
    assert records[ids[2]]["scene_caption"] == scene + " Edited by a person."
    assert records[ids[0]]["annotator"] == "reviewer@example.org" and records[ids[0]]["source"] == "label_studio"
    assert records[ids[0]]["stratum"] == exported["items"][0]["stratum"]
    lines = verdicts.path(root, p).read_text().splitlines()
    assert [json.loads(x)["item_id"] for x in lines] == sorted(ids[:5])
    assert all(list(json.loads(x)) == sorted(json.loads(x)) for x in lines)

    human = verdicts.human_test(root, p)
    assert set(human) == {ids[0], ids[1], ids[2], ids[4]}
    assert human[ids[1]]["regions"] == {int(rid): {"short": "a corrected caption", "detailed": None}}
    assert human[ids[0]] == {"scene_caption": None, "regions": {}, "added": []}
    assert json.loads((root / "reports/audit.json").read_text())["errors"] == 3


def test_a_label_studio_annotation_without_a_verdict_is_refused(exported, root, tmp_path):
    task = json.loads((root / "audit/tasks.json").read_text())[0]
    annotation = _annotation(task, "accept")
    annotation["result"] = [r for r in annotation["result"] if r["from_name"] != "verdict"]
    file = tmp_path / "export.json"
    file.write_text(json.dumps([{**task, "annotations": [annotation]}]))
    with pytest.raises(ValueError, match="chooses no verdict"):
        verdicts.read(file, "label-studio", exported)
    file.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="not a Label Studio JSON export"):
        verdicts.read(file, "auto", exported)


# --- CSV ----------------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(verdicts.CSV_HEADER)
        writer.writerows(rows)
    return path


def test_csv_verdicts_round_trip_and_merge(root, exported, tmp_path):
    template = list(csv.reader((root / "audit/verdicts.csv").open()))
    assert template[0] == list(verdicts.CSV_HEADER) and [r[0] for r in template[1:]] == [
        i["image_id"] for i in exported["items"]]
    ids = [i["image_id"] for i in exported["items"]]
    rid = next(iter(exported["items"][0]["regions"]))
    rows = [(ids[0], "accept", ""), (f"{ids[0]}#r{rid}", "edited", "a better short caption"),
            (ids[1], "reject", ""), (ids[2], "accept", ""), (ids[3], "", "")]
    p = _params(tmp_path)
    verdicts.import_file(root, p, _write_csv(tmp_path / "v.csv", rows), "auto", exported)
    records = verdicts.load(root, p)
    assert set(records) == set(ids[:3])
    assert records[ids[0]]["verdict"] == "edited" and records[ids[1]]["verdict"] == "reject"
    assert verdicts.human_test(root, p) == {
        ids[0]: {"scene_caption": None, "regions": {int(rid): {"short": "a better short caption", "detailed": None}},
                 "added": []},
        ids[2]: {"scene_caption": None, "regions": {}, "added": []},
    }
    # a second file replaces the verdicts on the images it holds and keeps the rest
    verdicts.import_file(root, p, _write_csv(tmp_path / "w.csv", [(ids[1], "accept", "")]), "csv", exported)
    assert {i: r["verdict"] for i, r in verdicts.load(root, p).items()} == {
        ids[0]: "edited", ids[1]: "accept", ids[2]: "accept"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("{id}", "maybe", "")], "is not one of accept, reject, edited"),
        ([("0123456789abcdef", "accept", "")], "not in the exported sample"),
        ([("{id}", "accept", ""), ("{id}", "reject", "")], "a second row for image"),
        ([("{id}#rX", "edited", "x")], "is not IMAGEID#r<region_id>"),
        ([("{id}#r999", "edited", "x")], "has no released region 999"),
        ([("{id}", "edited", "a caption with <r999>a ghost</r999>")], "well-formed <rN>"),
    ],
)
def test_bad_csv_rows_say_what_is_wrong(exported, tmp_path, rows, message):
    image_id = exported["items"][0]["image_id"]
    file = _write_csv(tmp_path / "v.csv", [(a.format(id=image_id), b, c) for a, b, c in rows])
    with pytest.raises(ValueError, match=re.escape(message)):
        verdicts.read(file, "csv", exported)


def test_csv_without_the_header_is_refused(exported, tmp_path):
    file = tmp_path / "v.csv"
    file.write_text("id,ok\nabc,accept\n")
    with pytest.raises(ValueError, match="must start with the header item_id,verdict,corrected_caption"):
        verdicts.read(file, "csv", exported)


# --- error rates and the gate -------------------------------------------------------------------------


def test_wilson_interval_values():
    lo, hi = verdicts.wilson(0, 10, 0.95)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert verdicts.wilson(5, 10, 0.95) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert verdicts.wilson(0, 0, 0.95) == (0.0, 1.0)
    assert verdicts.wilson(3, 30, 0.99)[1] > verdicts.wilson(3, 30, 0.95)[1]


def test_weighted_rate_undoes_oversampling_of_small_strata():
    records = {f"a{i}": {"item_id": f"a{i}", "verdict": "accept"} for i in range(9)}
    records |= {f"b{i}": {"item_id": f"b{i}", "verdict": "reject"} for i in range(3)}
    records["gone"] = {"item_id": "gone", "verdict": "reject"}
    strata = {i: i[0] for i in records if i != "gone"}
    s = verdicts.summarize(records, {"a": 90, "b": 10}, strata, 0.95)
    assert (s["audited"], s["errors"], s["stale"], s["error_rate"]) == (12, 3, 1, 0.25)
    assert s["weighted"]["error_rate"] == 0.1
    assert s["weighted"]["effective_n"] == pytest.approx(100**2 / (90**2 / 9 + 10**2 / 3), abs=1e-3)
    assert s["strata"]["b"] == {"population": 10, "audited": 3, "errors": 3, "error_rate": 1.0,
                                "wilson": [round(x, 4) for x in verdicts.wilson(3, 3, 0.95)]}


def _verdicts_for(root: Path, p: dict, exported: dict, errors: int) -> None:
    records = [{"item_id": item["image_id"], "verdict": "reject" if k < errors else "accept",
                "stratum": item["stratum"], "scene_caption": None, "regions": {}, "source": "csv"}
               for k, item in enumerate(exported["items"])]
    verdicts.merge(root, p, records)


def test_gate_blocks_a_release_whose_error_rate_is_too_high(root, exported, tmp_path):
    p = _params(tmp_path, max_error_rate=0.1)
    _verdicts_for(root, p, exported, errors=len(exported["items"]) // 2)
    result = verdicts.gate(root, p)
    assert not result.ok and "> audit.max_error_rate 10.0%" in result.message
    assert result.summary["errors"] == len(exported["items"]) // 2


def test_gate_passes_a_low_error_rate(root, exported, tmp_path):
    p = _params(tmp_path, max_error_rate=0.35)
    _verdicts_for(root, p, exported, errors=0)
    result = verdicts.gate(root, p)
    assert result.ok and result.message.startswith("audit gate passed")
    assert result.summary["audited"] == len(exported["items"]) and result.summary["weighted"]["wilson"][1] <= 0.35


def test_gate_when_no_verdicts_exist(root, tmp_path):
    required = verdicts.gate(root, _params(tmp_path, required=True))
    assert not required.ok and "audits are required (audit.required)" in required.message
    assert "groundcap audit import FILE" in required.message
    optional = verdicts.gate(root, _params(tmp_path, required=False))
    assert optional.ok and optional.message == "no human verdicts (audit.required is false)"
    assert optional.summary == {"audited": 0}


def test_gate_ignores_verdicts_on_images_no_longer_released(root, tmp_path):
    p = _params(tmp_path, required=True)
    verdicts.merge(root, p, [{"item_id": "0000000000000000", "verdict": "accept", "stratum": "x",
                              "scene_caption": None, "regions": {}, "source": "csv"}])
    result = verdicts.gate(root, p)
    assert not result.ok and "none of the 1 verdicts" in result.message and result.summary["stale"] == 1


# --- the command line -----------------------------------------------------------------------------------


def test_cli_export_and_import(root, exported, tmp_path):
    runner = CliRunner()
    for command in ("export", "import"):
        assert runner.invoke(audit_app, [command, "--help"]).exit_code == 0
    out = tmp_path / "sample"
    result = runner.invoke(audit_app, ["export", "--root", str(root), "--out", str(out), "--sample-size", "4",
                                       "--image-url-prefix", "https://example.org/img/"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["items"]) == 4 and manifest["sample_size"] == 4
    assert json.loads((out / "tasks.json").read_text())[0]["data"]["image"].startswith("https://example.org/img/")

    (tmp_path / "params.yaml").write_text(f"audit:\n  verdicts: {tmp_path / 'v.jsonl'}\n")
    rows = [(i["image_id"], "accept", "") for i in manifest["items"]]
    args = ["--root", str(root), "--params", str(tmp_path / "params.yaml"), "--manifest", str(out / "manifest.json")]
    result = runner.invoke(audit_app, ["import", str(_write_csv(tmp_path / "v.csv", rows)), *args])
    assert result.exit_code == 0, result.output
    assert "imported 4 verdicts" in result.output and "Wilson upper bound" in result.output
    assert len((tmp_path / "v.jsonl").read_text().splitlines()) == 4

    bad = runner.invoke(audit_app, ["import", str(_write_csv(tmp_path / "b.csv", [("nope", "accept", "")])), *args])
    assert bad.exit_code == 2 and "not in the exported sample" in bad.output
    missing = runner.invoke(audit_app, ["import", str(tmp_path / "v.csv"), "--root", str(tmp_path / "empty")])
    assert missing.exit_code == 2 and "run `groundcap audit export` first" in missing.output


def test_cli_import_waits_for_no_writer_it_refuses_while_one_holds_the_folder(root, exported, tmp_path):
    """`audit import` writes audit.verdicts and reports/audit.json from the work tables: while a run or a stage
    holds the folder's lock it exits 2 naming that writer, as a second stage command does."""
    import socket

    from groundcap.storage import writer_lock

    (tmp_path / "params.yaml").write_text(f"audit:\n  verdicts: {tmp_path / 'v.jsonl'}\n")
    rows = [(i["image_id"], "accept", "") for i in exported["items"]]
    args = ["import", str(_write_csv(tmp_path / "v.csv", rows)), "--root", str(root),
            "--params", str(tmp_path / "params.yaml")]
    with writer_lock.hold(root, "groundcap segment"):
        busy = CliRunner().invoke(audit_app, args)
    assert busy.exit_code == 2, busy.output
    assert f"pid {os.getpid()} on {socket.gethostname()} (`groundcap segment`" in busy.output
    assert not (tmp_path / "v.jsonl").exists()
    done = CliRunner().invoke(audit_app, args)  # the lock is free again, and the import released its own
    assert done.exit_code == 0, done.output
    assert (tmp_path / "v.jsonl").exists() and not (root / writer_lock.LOCK).exists()


# --- the release: human_test split and the gate in `build` ------------------------------------------------


def test_audited_images_form_human_test_with_corrections_and_the_gate_refuses_build(root, exported, tmp_path):
    import polars as pl
    import yaml
    from datasets import load_dataset

    from groundcap.cli.app import app

    project = tmp_path / "project"
    shutil.copytree(root / "work", project / "work")
    shutil.copytree(root / "reports", project / "reports")
    ids = [i["image_id"] for i in exported["items"]]
    rid = int(next(iter(exported["items"][0]["regions"])))
    p = _params(tmp_path, max_error_rate=1.0)  # two errors in three: the gate is opened on purpose here
    rows = [(f"{ids[0]}#r{rid}", "edited", "a person checked this short caption"), (ids[1], "reject", ""),
            (ids[2], "accept", "")]
    verdicts.import_file(project, p, _write_csv(tmp_path / "v.csv", rows), "csv", exported)
    run_all(Context(root=project, params=p, progress=False), ("split", "build", "card"))

    split = pl.read_parquet(project / "work/split/*.parquet")
    by_id = {r["image_id"]: r for r in split.iter_rows(named=True)}
    assert {i for i, r in by_id.items() if r["split"] == "human_test"} == {ids[0], ids[2]}
    assert by_id[ids[1]]["split"] is None and by_id[ids[1]]["reason"] == "rejected by human audit"
    human = load_dataset(str(project / "release"), split="human_test", cache_dir=str(tmp_path / "hf"))
    assert sorted(human["image_id"]) == sorted([ids[0], ids[2]])
    row = next(r for r in human if r["image_id"] == ids[0])
    assert next(r for r in row["regions"] if r["region_id"] == rid)["short_caption"] == (
        "a person checked this short caption")
    assert "human_test" in (project / "release/README.md").read_text()

    strict = copy.deepcopy(p)
    strict["audit"]["max_error_rate"] = 0.1
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump({"audit": strict["audit"]}))
    result = CliRunner().invoke(app, ["build", "--root", str(project), "--params", str(tmp_path / "strict.yaml"),
                                      "--quiet"])
    assert result.exit_code == 2 and "release refused by the audit gate" in result.output
    assert "> audit.max_error_rate 10.0%" in result.output


def test_a_repainted_mask_is_read_back_and_released_in_human_test(root, exported, tmp_path):
    """A reviewer fills a region's box with the brush and draws an entity the engine missed: the import
    keeps both masks exactly, and the human_test release carries them with the boxes and areas that follow
    (the drawn one with ``source: human``, in every format, counted by the card)."""
    from datasets import load_dataset

    project = tmp_path / "project"
    shutil.copytree(root / "work", project / "work")
    shutil.copytree(root / "reports", project / "reports")
    item = next(i for i in exported["items"] if i["regions"])
    tasks = json.loads((root / "audit/tasks.json").read_text())
    task = next(t for t in tasks if t["data"]["image_id"] == item["image_id"])
    rid = next(iter(item["regions"]))
    original = masks.decode(item["regions"][rid]["segmentation"]).astype(bool)
    repainted = original.copy()
    ys, xs = np.nonzero(original)
    repainted[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
    repainted[0, 0] = not repainted[0, 0]  # and a pixel far away, so the mask surely changed
    annotation = _annotation(task, "accept")
    for r in annotation["result"]:
        if r["id"] == f"xr{rid}":
            r["value"]["rle"] = rle_brush.encode(repainted)
    drawn = np.zeros_like(original)
    drawn[:12, :20] = True  # and an entity the engine missed
    annotation["result"] += _drawn("brush", "d1", drawn.shape, {"label": "kite", "short": "a kite",
                                                                "detailed": "A small kite in the corner."}, mask=drawn)
    file = tmp_path / "export.json"
    file.write_text(json.dumps([{**task, "annotations": [annotation]}]))
    p = _params(tmp_path, max_error_rate=1.0)
    verdicts.import_file(project, p, file, "auto", exported)
    record = verdicts.load(project, p)[item["image_id"]]
    assert record["verdict"] == "edited" and set(record["regions"]) == {rid}  # accept + corrections
    assert np.array_equal(masks.decode(record["regions"][rid]["segmentation"]).astype(bool), repainted)

    run_all(Context(root=project, params=p, progress=False), ("split", "build", "card"))
    human = load_dataset(str(project / "release"), split="human_test", cache_dir=str(tmp_path / "hf"))
    region = next(r for r in human[0]["regions"] if r["region_id"] == int(rid))
    assert np.array_equal(masks.decode(region["segmentation"]).astype(bool), repainted)
    assert region["area"] == int(repainted.sum())
    assert region["bbox"] == pytest.approx(masks.bbox(masks.encode(repainted)))
    (added,) = [r for r in human[0]["regions"] if r["source"] == "human"]
    assert (added["region_id"], added["label"], added["short_caption"], added["area"]) == (
        item["next_region_id"], "kite", "a kite", int(drawn.sum()))
    regions = load_dataset(str(project / "release"), "regions", split="human_test", cache_dir=str(tmp_path / "hf"))
    assert [r["short_caption"] for r in regions if r["source"] == "human"] == ["a kite"]
    assert "the 1 entity people drew in the audit" in (project / "release/README.md").read_text()


def test_brush_decode_reads_label_studio_s_own_encoding():
    ls = _ls_brush()
    mask = np.random.default_rng(0).random((37, 53)) > 0.6
    assert np.array_equal(rle_brush.decode(ls.mask2rle(mask.astype(np.uint8) * 255), 37, 53), mask)
    assert np.array_equal(rle_brush.decode(rle_brush.encode(mask), 37, 53), mask)
    with pytest.raises(ValueError, match="pixels"):
        rle_brush.decode(rle_brush.encode(mask), 36, 53)


# --- curation that adds: drawn entities, relabels, QA-failed images, the human_test size ------------------


def _drawn(kind: str, ident: str, shape: tuple[int, int], texts: dict[str, str], *, mask=None, points=None) -> list:
    """What Label Studio exports for an entity drawn as ``new`` (brush RLE or polygon points in percent),
    with its per-region text areas."""
    h, w = shape
    common = {"id": ident, "to_name": "image", "original_width": w, "original_height": h, "image_rotation": 0}
    geometry = {"format": "rle", "rle": rle_brush.encode(mask)} if kind == "brush" else {"points": points,
                                                                                        "closed": True}
    name, control = ("brushlabels", "region") if kind == "brush" else ("polygonlabels", "outline")
    return [{**common, "from_name": control, "type": name, "value": {**geometry, name: ["new"]}}] + [
        {**common, "from_name": k, "type": "textarea", "value": {**geometry, "text": [t]}} for k, t in texts.items()]


def _curated(tasks: list, item: dict) -> tuple[dict, dict, np.ndarray]:
    """An annotation that relabels one region and adds a brushed and an outlined entity (the outline a box)."""
    task = next(t for t in tasks if t["data"]["image_id"] == item["image_id"])
    h, w = item["height"], item["width"]
    rid = next(iter(item["regions"]))
    annotation = _annotation(task, "accept")
    brush = next(r for r in annotation["result"] if r["id"] == f"xr{rid}" and r["type"] == "brushlabels")
    annotation["result"] = [r for r in annotation["result"] if (r["id"], r["from_name"]) != (brush["id"], "label")]
    relabel = {"format": "rle", "rle": brush["value"]["rle"], "text": ["a relabelled thing"]}
    annotation["result"].append({**brush, "from_name": "label", "type": "textarea", "value": relabel})
    brushed = np.zeros((h, w), bool)
    brushed[h // 2:h // 2 + 20, w // 3:w // 3 + 30] = True
    annotation["result"] += _drawn("brush", "b7", (h, w), {"label": "kite", "short": "a red kite",
                                                           "detailed": "A red kite with a long tail."}, mask=brushed)
    annotation["result"] += _drawn("polygon", "p3", (h, w), {"label": "sky", "short": "a patch of sky",
                                                             "detailed": "Pale blue sky at the top."},
                                   points=[[10, 5], [50, 5], [50, 25], [10, 25]])
    return task, annotation, brushed


def test_drawn_entities_and_a_relabel_come_back_from_label_studio_and_are_released_as_human(root, exported,
                                                                                           tmp_path):
    from groundcap.builders import columns

    tasks = json.loads((root / "audit/tasks.json").read_text())
    item = next(i for i in exported["items"] if i["regions"] and i["qa_passed"])
    task, annotation, brushed = _curated(tasks, item)
    file = tmp_path / "export.json"
    file.write_text(json.dumps([{**task, "annotations": [annotation]}]))
    p = _params(tmp_path)
    verdicts.import_file(root, p, file, "auto", exported)
    record = verdicts.load(root, p)[item["image_id"]]
    rid = next(iter(item["regions"]))
    assert record["verdict"] == "edited"  # the machine missed two entities
    assert record["regions"][rid]["label"] == "a relabelled thing"
    first = item["next_region_id"]
    assert first > max(int(r) for r in item["regions"])
    sky, kite = record["added"]  # top to bottom: the outlined sky first
    assert (sky["region_id"], kite["region_id"]) == (first, first + 1)
    assert (kite["label"], kite["short"], sky["label"]) == ("kite", "a red kite", "sky")
    assert np.array_equal(masks.decode(kite["segmentation"]).astype(bool), brushed)
    h, w = item["height"], item["width"]
    assert masks.bbox(sky["segmentation"]) == pytest.approx([0.1 * w, 0.05 * h, 0.4 * w + 1, 0.2 * h + 1], abs=1.5)

    corrections = verdicts.human_test(root, p)
    index = next(i for i in parts_with(root, item["image_id"]))
    batch = columns.join_part(root / "work", index, corrections)
    row = next(r for r in batch.to_pylist() if r["image_id"] == item["image_id"])
    by_id = {r["region_id"]: r for r in row["regions"]}
    assert by_id[int(rid)]["label"] == "a relabelled thing"
    assert [r["region_id"] for r in row["regions"]][-2:] == [first, first + 1]
    assert by_id[first + 1] | {"segmentation": None} == {
        "region_id": first + 1, "bbox": masks.bbox(kite["segmentation"]), "area": int(brushed.sum()),
        "segmentation": None, "label": "kite", "granularity": None, "parent_id": None, "source": "human",
        "short_caption": "a red kite", "detailed_caption": "A red kite with a long tail."}
    untouched = columns.join_part(root / "work", index).to_pylist()
    assert sum(len(r["regions"]) for r in batch.to_pylist()) == sum(len(r["regions"]) for r in untouched) + 2


def parts_with(root: Path, image_id: str):
    from groundcap.storage import parts

    return [i for i in parts.list_parts(root / "work/ingest")
            if image_id in {r["image_id"] for r in parts.read_part(root / "work/ingest", i, ["image_id"])}]


@pytest.mark.parametrize(("change", "message"), [
    (lambda res: [r for r in res if not (r["id"] == "b7" and r["from_name"] == "detailed")],
     "needs a label, a short and a detailed caption"),
    (lambda res: [{**r, "value": {**r["value"], "points": r["value"]["points"][:2]}} if r["id"] == "p3" else r
                  for r in res], "an outline needs at least 3"),
    (lambda res: [*res, {"id": "zz", "from_name": "short", "to_name": "image", "type": "textarea",
                         "value": {"text": ["floating"]}}], "belongs to no region"),
    (lambda res: [{**r, "value": {**r["value"], "brushlabels": ["tree"]}} if r.get("type") == "brushlabels" else r
                  for r in res], "exactly one, r<region_id>"),
])
def test_a_drawn_entity_that_cannot_be_released_is_refused(root, exported, tmp_path, change, message):
    tasks = json.loads((root / "audit/tasks.json").read_text())
    item = next(i for i in exported["items"] if i["regions"] and i["qa_passed"])
    task, annotation, _ = _curated(tasks, item)
    annotation["result"] = change(annotation["result"])
    file = tmp_path / "export.json"
    file.write_text(json.dumps([{**task, "annotations": [annotation]}]))
    with pytest.raises(ValueError, match=message):
        verdicts.read(file, "label-studio", exported)


def _with_failed(root: Path, project: Path, n: int) -> list[str]:
    """A copy of the sample project's tables where QA failed ``n`` images (the sample has none); their ids."""
    import pyarrow.parquet as pq

    for stage in ("ingest", "segment", "caption_regions", "qa", "dedup", "redact"):
        shutil.copytree(root / "work" / stage, project / "work" / stage)
    (part,) = sorted((project / "work/qa").glob("*.parquet"))
    table = pq.read_table(part)
    failed = table["image_id"].to_pylist()[:n]
    flags = [i not in failed for i in table["image_id"].to_pylist()]
    pq.write_table(table.set_column(table.schema.get_field_index("passed"), "passed",
                                    pa.array(flags, table.schema.field("passed").type)), part)
    return failed


def test_qa_failed_images_are_sampled_and_their_false_rejection_rate_reported(root, tmp_path):
    project = tmp_path / "project"
    failed_ids = _with_failed(root, project, 4)
    p = _params(tmp_path, failed_share=0.5)
    exported = audit.export(project, p, sample_size=4)
    failed = [i for i in exported["items"] if not i["qa_passed"]]
    assert {i["image_id"] for i in failed} <= set(failed_ids) and len(failed) == 2
    assert all(i["stratum"].startswith("qa failed | source ") for i in failed)
    assert sum(n for s, n in exported["population"].items() if s.startswith(sample.FAILED)) == 4
    passed = [i for i in exported["items"] if i["qa_passed"]]
    assert len(passed) == 2
    records = [{"item_id": i["image_id"], "verdict": "accept" if k == 0 else "reject", "stratum": i["stratum"],
                "scene_caption": None, "regions": {}, "source": "csv"} for k, i in enumerate(failed)]
    records += [{"item_id": i["image_id"], "verdict": "accept", "stratum": i["stratum"], "scene_caption": None,
                 "regions": {}, "source": "csv"} for i in passed]
    verdicts.merge(project, p, records)
    summary = verdicts.report(project, p)
    assert (summary["audited"], summary["errors"], summary["stale"]) == (2, 0, 0)  # failed images apart
    assert summary["false_rejection"] == {"audited": 2, "accepted": 1, "rate": 0.5,
                                          "wilson": [round(x, 4) for x in verdicts.wilson(1, 2, 0.95)]}
    # a new export leaves the judged images out: it tops the audit up
    again = audit.draw_sample(project, p, 12)
    assert {c.image_id for c in again.items} == {c.image_id for c in sample.candidates(project)} - {
        r["item_id"] for r in records}


def test_human_test_takes_exactly_the_requested_size_and_says_when_it_cannot():
    from groundcap import splits

    groups = {f"img{i}": f"g{i}" for i in range(10)} | {"twin": "g0"}
    section = {"seed": 3, "fractions": {"train": 0.5, "validation": 0.25, "test": 0.25}, "sizes": None}
    human = {f"img{i}" for i in range(6)}
    picked = splits.assign(groups, section, human=human, human_size=4, pinned={"img5": "train"})
    chosen = {i for i, a in picked.items() if a.split == splits.HUMAN_TEST}
    assert len(chosen) == 4 and chosen < human - {"img5"}  # a pinned image keeps its split
    assert all(picked[i].split in splits.SPLITS for i in human - chosen)  # the others are split by hash
    assert picked == splits.assign(groups, section, human=human, human_size=4, pinned={"img5": "train"})
    everyone = splits.assign(groups, section, human=human, human_size=None)
    assert sum(a.split == splits.HUMAN_TEST for a in everyone.values()) == 6
    status = {"requested": 130, "accepted": 128, "short_by": 2}
    short = verdicts.human_test_message(status)
    assert "only 128 of the 130" in short and "2 more accepted images are needed" in short
    assert verdicts.human_test_message({"requested": 130, "accepted": 131, "short_by": 0}).startswith(
        "human_test: 130 of the 131 accepted")


def test_the_split_stage_says_when_human_test_falls_short(root, exported, tmp_path, capsys):
    import polars as pl

    project = tmp_path / "project"
    for stage in ("qa", "dedup", "ingest"):
        shutil.copytree(root / "work" / stage, project / "work" / stage)
    ids = [i["image_id"] for i in exported["items"] if i["qa_passed"]][:3]
    p = _params(tmp_path, human_test_size=2)
    verdicts.merge(project, p, [{"item_id": i, "verdict": "accept", "stratum": "x", "scene_caption": None,
                                 "regions": {}, "source": "csv"} for i in ids])
    run_all(Context(root=project, params=p, progress=False), ("split",))
    split = pl.read_parquet(project / "work/split/*.parquet")
    assert split.filter(pl.col("split") == "human_test").height == 2
    assert "human_test holds" not in capsys.readouterr().err
    p["audit"]["human_test_size"] = 5
    run_all(Context(root=project, params=p, progress=False), ("split",))
    assert pl.read_parquet(project / "work/split/*.parquet").filter(pl.col("split") == "human_test").height == 3
    assert "split: human_test holds 3 of the 5 images audit.human_test_size asks for" in capsys.readouterr().err
    assert "only 3 of the 5" in verdicts.human_test_message(verdicts.report(project, p)["human_test"])


def test_the_card_counts_the_entities_people_added():
    from groundcap.dataset_card import card

    stats = {"train": {"region_sources": {"felzenszwalb": 9}}, "human_test": {"region_sources": {"felzenszwalb": 4,
                                                                                                   "human": 2}}}
    text = card._region_sources(stats)
    assert "the 2 entities people drew in the audit" in text and "| human_test | 4 | 2 |" in text
    assert card._region_sources({"train": {"region_sources": {"felzenszwalb": 9}}}) == ""
