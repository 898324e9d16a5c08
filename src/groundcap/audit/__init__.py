"""Human-sampled audits: a stratified sample out for review, verdicts back in, an error rate that gates the release.

``export`` writes the sample (``sample``) as an HTML gallery (``gallery``) and as Label Studio tasks
(``labelstudio``); ``verdicts.import_file`` reads the reviews back; ``verdicts.gate`` decides whether
``build`` may release and ``verdicts.human_test`` lists the images (and corrections) of the human_test
split.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from groundcap.audit import gallery, labelstudio, sample, verdicts
from groundcap.audit.verdicts import GateResult, gate, human_test

__all__ = ["GateResult", "draw_sample", "export", "gate", "human_test"]


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def draw_sample(root: Path, params: dict[str, Any], size: int) -> sample.Sample:
    """The sample ``export`` writes: ``audit.failed_share`` of it QA-failed, none of it judged before."""
    section = params["audit"]
    return sample.draw(root, size, int(section["seed"]), float(section["failed_share"]),
                       verdicts.load(root, params).keys())


def export(root: Path, params: dict[str, Any], out: Path | None = None, sample_size: int | None = None,
           url_prefix: str = labelstudio.DEFAULT_URL_PREFIX, originals: bool = False) -> dict:
    """Draw the sample and write ``out`` (default ROOT/audit); returns the manifest. The images are the
    released ones (faces and plates blurred) unless ``originals``.

    Files: ``gallery.html``, ``tasks.json`` and ``labeling_config.xml`` for Label Studio, ``images/``
    (the files the tasks point at), ``verdicts.csv`` (a template for the CSV route) and ``manifest.json``
    (the sample, its strata and the machine text under review; ``import`` checks verdicts against it).
    Images already judged in ``audit.verdicts`` are not drawn again.
    """
    section = params["audit"]
    size = int(sample_size if sample_size is not None else section["sample_size"])
    seed = int(section["seed"])
    out = Path(out) if out is not None else Path(root) / sample.DEFAULT_DIR
    drawn = draw_sample(root, params, size)
    judged = len(verdicts.load(root, params))
    rows = sample.read_rows(root, {c.image_id for c in drawn.items}, originals)
    strata = {c.image_id: c.stratum for c in drawn.items}
    items = [rows[c.image_id] for c in drawn.items]
    manifest = sample.manifest(drawn, rows, seed, size)

    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    for item in items:
        (images / f"{item['image_id']}.{labelstudio.extension(item['format'])}").write_bytes(item["bytes"])
    failed = sum(not c.qa_passed for c in drawn.items)
    summary = (f"{len(items)} of {sum(drawn.population.values())} images in {len(drawn.allocation)} of "
               f"{len(drawn.population)} strata, seed {seed}; {failed} of them QA failed (strata 'qa failed'), to "
               "measure false rejections" + (f"; {judged} images judged before are left out" if judged else "")
               + ". Regions are numbered on the image and in the table. "
               + ("The images are the ORIGINALS (--originals): faces and plates are not blurred; do not share "
                  "this page." if originals else "The images are the released ones: faces and plates blurred."))
    _write(out / "gallery.html", gallery.render(items, strata, summary))
    tasks = [labelstudio.task(item, strata[item["image_id"]], url_prefix) for item in items]
    _write(out / "tasks.json", json.dumps(tasks, sort_keys=True, ensure_ascii=False) + "\n")
    _write(out / "labeling_config.xml", labelstudio.config(r["region_id"] for item in items for r in item["regions"]))
    _write(out / "verdicts.csv", ",".join(verdicts.CSV_HEADER) + "\n" + "".join(f"{i['image_id']},,\n" for i in items))
    _write(out / sample.MANIFEST, json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return manifest
