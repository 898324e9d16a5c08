"""Params are checked when they load: every problem named by its key path, before any stage runs."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from groundcap import params
from groundcap.cli.app import app
from groundcap.errors import GroundcapError, ParamsError
from groundcap.params import validation

REPO = Path(__file__).parents[1]
PROFILES = sorted(params.PROFILES.glob("*.yaml"))

BAD = [
    ("part_size: [1]", "part_size is [1] (a list); expected an integer >= 1"),
    ("part_size: 0", "part_size is 0; expected an integer >= 1"),
    ("part_size: true", "part_size is True (a boolean); expected an integer"),
    ("ingest: 5", "ingest is 5; expected a mapping"),
    ("ingest: {max_bytes: null}", "ingest.max_bytes is null; expected an integer >= 1"),
    ("ingest: {animated: loop}", "ingest.animated is 'loop'; allowed: first_frame, reject"),
    ('split: {fractions: {train: "a"}}', "split.fractions.train is 'a'; expected a number"),
    ("split: {fractions: {train: 0.9, validation: 0.5, test: 0.5}}", "split.fractions sum to 1.9; they must sum to 1"),
    ("split: {fractions: null, sizes: {validation: -1}}", "split.sizes.validation is -1; expected an integer >= 0"),
    ("build: {shard_bytes: 0}", "build.shard_bytes is 0; expected an integer >= 1"),
    ("build: {row_group_rows: -5}", "build.row_group_rows is -5; expected an integer >= 1"),
    ("release: {name: null}", "release.name is null"),
    ("release: {version: 1.0}", "release.version is 1.0; expected a semantic version"),
    ("qa: {evidence: {action: flg}}", "qa.evidence.action is 'flg'; allowed: fail, flag"),
    ("qa: {consistency: {min_claim_agreement: 1.5}}",
     r"qa.consistency.min_claim_agreement is 1.5; expected a number in [0, 1]"),
    ("segment: {nms_iou: 1.5}", r"segment.nms_iou is 1.5; expected a number in [0, 1]"),
    ("executor: {kind: spark}", "executor.kind is 'spark'; allowed: local, ray"),
    ("executor: {workers: 0}", "executor.workers is 0; expected an integer >= 1"),
    ("executor: {max_attempts: 0}", "executor.max_attempts is 0; expected an integer >= 1"),
    ("executor: {ray: {num_gpus: {segmnt: 1}}}",
     "executor.ray.num_gpus names 'segmnt'; allowed: build, caption_regions, caption_scene"),
    ("dedup: {keep: best}", "dedup.keep is 'best'; allowed: one, all"),
    ("tag: {taggers: [palete]}", "tag.taggers names 'palete', not a registered tagger backend; tagger backends: "),
    ("segment: {prompted: grabcat}", "segment.prompted is 'grabcat'; not a registered prompted_segmenter backend"),
    ("segment: {crop_tagger: haar}", "segment.crop_tagger is 'haar'; not a registered tagger backend"),
    ("segment: {concept: sam}", "segment.concept is 'sam'; not a registered concept_segmenter backend"),
    ("segment: {sam3: {threshold: high}}", "segment.sam3.threshold is 'high'; expected a number"),
    ("segment: {prompted: null}", "segment.prompted is null but tag.detectors find boxes to segment"),
    ("segment: 5", "segment is 5; expected a mapping of work_side, prompted"),  # the crop tagger's options: none
    ("caption_regions: {verifier: judge}", "caption_regions.verifier is 'judge'; not a registered verifier backend"),
    ("crosscheck: {judge: nope}", "crosscheck.judge is 'nope'; not a registered verifier backend"),
    ("crosscheck: {embedder: bert}", "crosscheck.embedder is 'bert'; allowed: minilm"),
    ("tag: {haar: {min_neighbours: 3}}", "tag.haar.min_neighbours is not an option of the haar backend; its options: "),
    ("tag: {haar: {min_neighbors: many}}",
     "tag.haar.min_neighbors is 'many'; expected an integer (like its default 6)"),
    ("tag: {haar: 3}", "tag.haar is 3; expected a mapping of the haar backend's options"),
    ("tag: {clipp: {top_k: 3}}", "unknown parameter 'tag.clipp'"),
    ("segment: {felzenszwalb: {scale: fast}}", "segment.felzenszwalb.scale is 'fast'; expected a number"),
    ("split: {group_pattern: '('}", "split.group_pattern is '('; expected a regular expression"),
    ("audit: {required: 'yes'}", "audit.required is 'yes'; expected true or false"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_is_refused_naming_its_key_path(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text + "\n")
    with pytest.raises(ParamsError) as caught:
        params.load(f)
    assert isinstance(caught.value, GroundcapError)
    lines = str(caught.value).splitlines()
    assert any(line.startswith("params: ") and message in line for line in lines), str(caught.value)


def test_every_problem_is_reported_together_one_line_each(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("part_size: 0\nqa: {evidence: {action: flg}}\nbuild: {shard_bytes: 0}\n")
    with pytest.raises(ParamsError) as caught:
        params.load(f)
    lines = str(caught.value).splitlines()
    assert len(lines) == 3 and all(line.startswith("params: ") for line in lines)


def test_backend_options_beyond_those_in_defaults_yaml_are_accepted(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("tag: {haar: {scale_factor: 1.2, work_side: 800.0}, clip: {top_k: 3}}\n"
                 "segment: {sam: {model: facebook/sam-vit-base}}\n")
    p = params.load(f)
    assert p["tag"]["haar"]["scale_factor"] == 1.2 and p["tag"]["haar"]["cascades"]  # merged into the defaults


def test_the_cli_refuses_bad_params_before_any_stage_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("qa: {evidence: {action: flg}}\nbuild: {row_group_rows: -5}\n")
    result = CliRunner().invoke(app, ["run", "--source", "sample:", "--workdir", str(tmp_path / "tmp"),
                                      "--params", str(bad), "-q"])
    assert result.exit_code == 2, result.output
    assert "params: qa.evidence.action is 'flg'; allowed: fail, flag" in result.output
    assert "params: build.row_group_rows is -5" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "tmp").exists()


def test_a_stage_command_refuses_bad_project_params(tmp_path):
    (tmp_path / "params.yaml").write_text("executor: {kind: spark}\n")
    result = CliRunner().invoke(app, ["tag", "--root", str(tmp_path), "-q"])
    assert result.exit_code == 2 and "executor.kind is 'spark'; allowed: local, ray" in result.output
    assert not (tmp_path / "work").exists()


def test_defaults_and_params_yaml_validate_clean():
    validation.check(params.defaults())
    validation.check(params.load(REPO / "params.yaml"))


@pytest.mark.parametrize("stack", [list(p) for n in range(1, len(PROFILES) + 1)
                                   for p in itertools.permutations(PROFILES, n)],
                         ids=lambda stack: "+".join(p.stem for p in stack))
def test_every_profile_alone_and_stacked_validates_clean(tmp_path, stack):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"profile": [str(p) for p in stack]}))
    loaded = params.load(f)
    for profile in stack:
        for section in yaml.safe_load(profile.read_text()):
            assert section in loaded


def test_profiles_resolve_by_name_beside_the_params_file(tmp_path):
    (tmp_path / "profiles").mkdir()
    for p in PROFILES:
        (tmp_path / "profiles" / p.name).write_text(p.read_text())
    f = tmp_path / "params.yaml"
    f.write_text("profile: [gpu, sa_pancap]\n")
    loaded = params.load(f)
    assert loaded["tag"]["taggers"] == ["vlm"] and loaded["split"]["fractions"] is None
    f.write_text("profile: gpu\n")
    assert params.load(f)["segment"]["prompted"] == "sam"


def test_a_bad_profile_value_is_refused(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "typo.yaml").write_text("tag: {detectors: [haar, owl]}\n")
    f = tmp_path / "params.yaml"
    f.write_text("profile: typo\n")
    with pytest.raises(ParamsError, match=re.escape("tag.detectors names 'owl'")):
        params.load(f)
    f.write_text("profile: 5\n")
    with pytest.raises(ParamsError, match="profile is 5"):
        params.load(f)


def test_a_packaged_profile_resolves_by_name_from_a_params_file_anywhere(tmp_path):
    """`groundcap run --params elsewhere/p.yaml` with `profile: gpu`: the profile shipped in the package,
    unless the params file's folder has a profiles/gpu.yaml of its own; a path still works."""
    f = tmp_path / "p.yaml"
    f.write_text("profile: gpu\n")
    assert params.load(f)["segment"]["prompted"] == "sam"
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "gpu.yaml").write_text("segment: {prompted: grabcut}\n")
    assert params.load(f)["segment"]["prompted"] == "grabcut"
    (tmp_path / "mine.yaml").write_text("segment: {max_regions: 7}\n")
    f.write_text("profile: [gpu, mine.yaml]\n")
    assert params.load(f)["segment"]["max_regions"] == 7
    f.write_text("profile: nothing_like_it\n")
    with pytest.raises(ParamsError, match="not found"):
        params.load(f)
