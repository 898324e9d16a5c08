"""Label Studio: the labeling config, the import tasks, and reading its JSON export back.

One task per audited image. Its prediction pre-fills everything the reviewer judges: every released
region as a brush mask (label ``r<region_id>``, result id ``r<region_id>``, Label Studio's own RLE,
see ``rle_brush``) with its label, short and detailed caption in per-region text areas, and the grounded
scene caption in a text area. The reviewer fixes text (a new label relabels the region) or repaints a
mask in place and chooses accept, reject or edited; a region's brush results are read back as one mask
(``rle_brush.decode``), which counts as a correction when it differs from the released mask.

An entity the engine missed is drawn with the brush or the polygon tool under the label ``new`` and
given its label, short and detailed caption in the same per-region text areas: the captions are the
auditor's own, never an engine's afterwards, because these entities go to ``human_test``, the split
that measures the engine, and an engine caption there would grade the engine against itself.

Images are referenced, not embedded: ``data.image`` is ``url_prefix + <image_id>.<ext>``. The default
prefix, ``/data/local-files/?d=audit/images/``, serves the exported ``images/`` folder through Label
Studio's local-files storage: start Label Studio with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true``
and ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` set to the folder holding ``audit/`` (the project
root), and add a local storage for that path. Any URL prefix that serves the files works too.

The export to read back is Label Studio's "JSON" export (a list of tasks with their annotations).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping

import numpy as np
from PIL import Image, ImageDraw

from groundcap import masks
from groundcap.audit.gallery import color as region_color
from groundcap.audit.rle_brush import decode as rle_decode
from groundcap.audit.rle_brush import encode as rle_encode
from groundcap.errors import AuditError

DEFAULT_URL_PREFIX = "/data/local-files/?d=audit/images/"
IMAGE, REGION, OUTLINE, LABEL, SHORT, DETAILED, SCENE, CHECKS, VERDICT = (
    "image", "region", "outline", "label", "short", "detailed", "scene_caption", "checks", "verdict")
NEW = "new"  # the brush or polygon label of an entity the reviewer drew
VERDICTS = ("accept", "reject", "edited")
_LABEL = re.compile(r"^r(\d+)$")


def label(region_id: int) -> str:
    return f"r{region_id}"


def config(region_ids: Iterable[int]) -> str:
    """The labeling config XML; one brush label per region id that occurs in the sample, and ``new``."""
    view = ET.Element("View")
    ET.SubElement(view, "Header", value="Check every caption against the image. Fix wrong text in place and "
                                         "choose edited; choose reject when a mask or caption cannot be fixed here. "
                                         f"Draw an entity the machine missed with the brush or polygon as '{NEW}' "
                                         "and write its label, short and detailed caption.")
    ET.SubElement(view, "Image", name=IMAGE, value="$image", zoom="true")
    brush = ET.SubElement(view, "BrushLabels", name=REGION, toName=IMAGE)
    for rid in sorted(set(region_ids)):
        ET.SubElement(brush, "Label", value=label(rid), background=region_color(rid))
    ET.SubElement(brush, "Label", value=NEW, background="#ffffff")
    ET.SubElement(ET.SubElement(view, "PolygonLabels", name=OUTLINE, toName=IMAGE), "Label", value=NEW,
                  background="#ffffff")
    ET.SubElement(view, "Header", value="Scene caption (<rN>phrase</rN> points at region rN; keep the tags)")
    ET.SubElement(view, "TextArea", name=SCENE, toName=IMAGE, editable="true", maxSubmissions="1", rows="5")
    selected = ET.SubElement(view, "View", visibleWhen="region-selected")
    ET.SubElement(selected, "Header", value="Selected region: label, short and detailed caption")
    ET.SubElement(selected, "TextArea", name=LABEL, toName=IMAGE, perRegion="true", editable="true",
                  maxSubmissions="1", rows="1")
    ET.SubElement(selected, "TextArea", name=SHORT, toName=IMAGE, perRegion="true", editable="true",
                  maxSubmissions="1", rows="1")
    ET.SubElement(selected, "TextArea", name=DETAILED, toName=IMAGE, perRegion="true", editable="true",
                  maxSubmissions="1", rows="3")
    ET.SubElement(view, "Header", value="Claims QA checked against the pixels")
    ET.SubElement(view, "Text", name=CHECKS, value="$checks")
    choices = ET.SubElement(view, "Choices", name=VERDICT, toName=IMAGE, choice="single", required="true",
                            showInline="true")
    for value in VERDICTS:
        ET.SubElement(choices, "Choice", value=value)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def _checks(item: Mapping) -> str:
    def line(where: str, c: Mapping) -> str:
        return f"{where}: {c['verdict']} {c['kind']} \"{c['claim']}\" ({c['detail'] or ''})"

    lines = [line("scene", c) for c in item["scene_evidence"]]
    lines += [line(label(r["region_id"]), c) for r in item["regions"] for c in r["evidence"]]
    return "\n".join(lines) or "no checkable claims"


def task(item: Mapping, stratum: str, url_prefix: str) -> dict:
    """One Label Studio import task (data plus a pre-filled prediction) for an item of ``sample.read_rows``."""
    w, h = item["width"], item["height"]
    common = {"to_name": IMAGE, "original_width": w, "original_height": h, "image_rotation": 0}
    result = []
    for region in item["regions"]:
        rid = label(region["region_id"])
        brush = {"format": "rle", "rle": rle_encode(masks.decode(region["segmentation"]))}
        result.append({"id": rid, "from_name": REGION, "type": "brushlabels", **common,
                       "value": {**brush, "brushlabels": [rid]}})
        # per-region text areas repeat the region's geometry, as Label Studio's own results do
        texts = [(LABEL, region["label"])] if region["label"] else []
        texts += [(SHORT, region["short"]), (DETAILED, region["detailed"])]
        result += [{"id": rid, "from_name": name, "type": "textarea", **common, "value": {**brush, "text": [text]}}
                   for name, text in texts]
    result.append({"id": "scene", "from_name": SCENE, "type": "textarea", **common,
                   "value": {"text": [item["scene_caption"]]}})
    return {
        "data": {"image": f"{url_prefix}{item['image_id']}.{extension(item['format'])}", "image_id": item["image_id"],
                 "stratum": stratum, "qa_score": item["qa_score"], "scene_caption": item["scene_caption"],
                 CHECKS: _checks(item)},
        "predictions": [{"model_version": "groundcap", "score": item["qa_score"], "result": result}],
    }


def extension(fmt: str) -> str:
    return {"JPEG": "jpg", "PNG": "png"}.get(fmt.upper(), fmt.lower())


def parse_export(tasks: object) -> list[dict]:
    """Verdicts from a Label Studio JSON export, as raw records for ``verdicts.finish``.

    Per task, the latest annotation not cancelled counts (by ``updated_at``, then id); tasks nobody
    annotated yet are skipped. Each record: item_id, verdict, scene_caption (the text area's text),
    regions {region_id: {label, short, detailed, segmentation}} (the per-region text areas' texts, the brush
    mask as COCO RLE), added [{result_id, segmentation, label, short, detailed}] (entities drawn as ``new``),
    annotator.
    """
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
        raise AuditError("not a Label Studio JSON export (a list of tasks with 'data' and 'annotations'); "
                         "export the project as JSON, not JSON-MIN or CSV")
    records = []
    for t in tasks:
        image_id = t["data"].get("image_id")
        if not image_id:
            raise AuditError(f"task {t.get('id')} has no data.image_id: it was not made by `groundcap audit export`")
        done = [a for a in t.get("annotations") or [] if not a.get("was_cancelled")]
        if not done:
            continue
        records.append(_record(image_id, max(done, key=_recency)))
    return records


def _recency(annotation: Mapping) -> tuple[str, int]:
    ident = annotation.get("id")
    return annotation.get("updated_at") or "", ident if isinstance(ident, int) else -1


def _brush_mask(image_id: str, result: Mapping) -> np.ndarray:
    value = result["value"]
    if value.get("format") != "rle" or not value.get("rle"):
        raise AuditError(f"image {image_id}: brush result {result.get('id')} holds no RLE mask; export as JSON")
    try:
        return rle_decode(value["rle"], int(result["original_height"]), int(result["original_width"]))
    except (KeyError, ValueError) as exc:
        raise AuditError(f"image {image_id}: brush result {result.get('id')} cannot be read ({exc})") from None


def _polygon_mask(image_id: str, result: Mapping) -> np.ndarray:
    """The filled polygon of a polygon result: its points are percentages of the image's width and height."""
    try:
        w, h = int(result["original_width"]), int(result["original_height"])
        points = [(float(x) * w / 100, float(y) * h / 100) for x, y in result["value"]["points"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditError(f"image {image_id}: polygon result {result.get('id')} cannot be read ({exc})") from None
    if len(points) < 3:
        raise AuditError(f"image {image_id}: polygon result {result.get('id')} has {len(points)} points; "
                         "an outline needs at least 3")
    canvas = Image.new("1", (w, h), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _texts(value: Mapping) -> str:
    return " ".join(t.strip() for t in value.get("text") or [])


def _labels(image_id: str, result: Mapping) -> list[str]:
    names = result["value"].get("brushlabels" if result["type"] == "brushlabels" else "polygonlabels") or []
    unknown = [n for n in names if n != NEW and not _LABEL.match(n)]
    if unknown or len(names) != 1:
        raise AuditError(f"image {image_id}: a drawn region carries the labels {names}; give each exactly one, "
                         f"r<region_id> (a repainted region) or '{NEW}' (an entity the machine missed)")
    return names


def _record(image_id: str, annotation: Mapping) -> dict:
    results = annotation.get("result") or []
    choices = [r["value"]["choices"] for r in results
               if r.get("from_name") == VERDICT and r.get("value", {}).get("choices")]
    if not choices or choices[-1][0] not in VERDICTS:
        raise AuditError(f"image {image_id}: the annotation chooses no verdict ({', '.join(VERDICTS)}); "
                         "submit a verdict for every reviewed task and export again")
    region_of = {}  # result id -> region id, from the brush labels (ids may be regenerated by the editor)
    painted: dict[int, np.ndarray] = {}  # region id -> the union of its brush results' masks
    drawn: dict[str, dict] = {}  # result id -> an entity the reviewer added: its mask, then its texts
    for r in results:
        if r.get("type") in ("brushlabels", "polygonlabels"):
            (name,) = _labels(image_id, r)
            mask = _brush_mask(image_id, r) if r["type"] == "brushlabels" else _polygon_mask(image_id, r)
            if name == NEW:
                drawn[str(r.get("id"))] = {"segmentation": mask}
                continue
            if r["type"] == "polygonlabels":
                raise AuditError(f"image {image_id}: region {name} was outlined with the polygon tool; repaint a "
                                 f"released region with the brush, and outline only '{NEW}' entities")
            rid = int(_LABEL.match(name).group(1))
            region_of[r.get("id")] = rid
            painted[rid] = painted[rid] | mask if rid in painted else mask
    scene, regions = None, {}
    for r in results:
        name = r.get("from_name")
        if name == SCENE:
            scene = _texts(r["value"])
        elif name in (LABEL, SHORT, DETAILED):
            if str(r.get("id")) in drawn:
                drawn[str(r.get("id"))][name] = _texts(r["value"])
                continue
            m = _LABEL.match(str(r.get("id")))
            rid = region_of.get(r.get("id"), int(m.group(1)) if m else None)
            if rid is None:
                raise AuditError(f"image {image_id}: a {name} text belongs to no region (result {r.get('id')}); "
                                 f"draw the entity as '{NEW}' before writing its captions")
            regions.setdefault(rid, {})[name] = _texts(r["value"])
    for rid, mask in painted.items():
        regions.setdefault(rid, {})["segmentation"] = masks.encode(mask)
    added = [{**texts, "segmentation": masks.encode(texts["segmentation"]), "result_id": key}
             for key, texts in drawn.items()]
    by = annotation.get("completed_by")
    annotator = by.get("email") or by.get("id") if isinstance(by, dict) else by
    return {"item_id": image_id, "verdict": choices[-1][0], "scene_caption": scene, "regions": regions,
            "added": added, "annotator": None if annotator is None else str(annotator)}
