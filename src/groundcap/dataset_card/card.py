"""The release's README.md: Hub metadata (YAML) plus a human description, both from the release itself.

The YAML declares the two Parquet configs with their ``data_files`` per split and their features
(``dataset_info``), so ``load_dataset`` infers nothing; ``num_examples`` come from the Parquet
footers, and ``datasets`` checks them on load. The body states how the data was made (backends from
``provenance`` with their model ids, versions and prompt hashes, the thresholds, the params hash),
per-split statistics and plots read from the released Parquet, the QA and audit summary, the
changelog, the layout and usage, limitations, sources and citation. Nothing in it depends on the
time or on where the folder lives, so the same release gives the same card. Text from data (labels,
QA reasons, source names) goes in through :func:`~groundcap.dataset_card.escape.literal`: never markup.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Features
from datasets.info import DatasetInfo
from datasets.splits import SplitDict, SplitInfo
from huggingface_hub import DatasetCard, DatasetCardData

from groundcap.builders import SPLITS
from groundcap.builders.columns import HUMAN
from groundcap.builders.features import PANCAP_TEXT, release_configs
from groundcap.builders.parquet import CONFIG_DIRS
from groundcap.dataset_card.escape import Markdown, literal
from groundcap.dataset_card.stats import parquet_sizes, redaction_stats, shard_files, split_stats
from groundcap.licenses import Declared, declare
from groundcap.params import content, digest
from groundcap.releases.versions import tag
from groundcap.storage import atomic

TASK_CATEGORIES = ["image-to-text", "image-segmentation"]
TAGS = ["dense-captioning", "grounded-captioning", "region-captioning", "segmentation-masks", "coco-rle"]
_SIZE_BUCKETS = [  # (upper bound, Hub size category)
    (1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"), (1e7, "1M<n<10M"),
    (1e8, "10M<n<100M"), (1e9, "100M<n<1B"), (1e10, "1B<n<10B"), (1e11, "10B<n<100B"), (1e12, "100B<n<1T"),
]  # fmt: skip
_SECRET = re.compile(r"token|secret|password|passwd|api_?key|credential", re.IGNORECASE)
_ROWS_OF = {"default": "image", "regions": "region"}


def size_category(n: int) -> str:
    return next((name for bound, name in _SIZE_BUCKETS if n < bound), "n>1T")


def _declared(release_dir: Path, splits) -> dict[str, dict[str, tuple[int, int, int]]]:
    """{config: {split: (rows, bytes, uncompressed bytes)}} for the splits the YAML declares.

    Only splits with rows: ``load_dataset`` (datasets 5.2) cannot load a DatasetDict in which any
    split is empty ("Instruction ... corresponds to no data", huggingface/datasets#8401), although
    streaming can. The zero-row shard of an empty split stays in the folder, carrying the schema.
    """
    declared = {}
    for config, directory in CONFIG_DIRS.items():
        sizes = {split: parquet_sizes(shard_files(release_dir, directory, split)) for split in splits}
        if nonempty := {split: size for split, size in sizes.items() if size[0]}:
            declared[config] = nonempty
    return declared


def _configs(declared: dict) -> list[dict]:
    return [
        {
            "config_name": config,
            "data_files": [{"split": split, "path": f"{CONFIG_DIRS[config]}/{split}-*"} for split in splits],
        }
        for config, splits in declared.items()
    ]


def _dataset_info(declared: dict, features: dict[str, Features]) -> list[dict]:
    infos = []
    for config, splits in declared.items():
        split_dict = SplitDict()
        for split, (rows, _, uncompressed) in splits.items():
            # num_bytes: Parquet's uncompressed size, the closest footer figure to the Arrow size
            split_dict.add(SplitInfo(name=split, num_bytes=uncompressed, num_examples=rows))
        info = DatasetInfo(
            config_name=config,
            features=features[config],
            splits=split_dict,
            download_size=sum(size for _, size, _ in splits.values()),
            dataset_size=sum(uncompressed for _, _, uncompressed in splits.values()),
        )
        infos.append(info._to_yaml_dict())
    return infos


# --- markdown helpers -------------------------------------------------------------------------------


def _text(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"  # thresholds like 0.005 stay readable; means keep 4 significant digits
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
        value = ", ".join(str(v) for v in value)
    elif isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def _cell(value) -> str:
    if isinstance(value, Markdown):
        return value
    return _text(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def public(value):
    """Drop keys that look like credentials, at any depth: provenance must never leak one."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items() if not _SECRET.search(str(k))}
    if isinstance(value, list):
        return [public(v) for v in value]
    return value


def _data_rows(summary: dict) -> list[list]:
    """``[name, value]`` rows of a summary whose keys and texts come from data (QA reasons quote captions)."""
    def shown(value):  # texts escaped; numbers, and the empty {} of a summary without reasons, as they are
        return literal(_text(value)) if isinstance(value, str) or value and isinstance(value, (list, dict)) else value

    return [[Markdown(name), shown(value)] for name, value in _flatten(public(summary), name=literal)]


def _flatten(mapping: dict, prefix: str = "", name=str) -> list[list]:
    """``[key / subkey / ..., value]`` rows; ``name`` turns each key into text."""
    rows = []
    for key, value in mapping.items():
        full = f"{prefix}{name(key)}"
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{full} / ", name)
        else:
            rows.append([full, value])
    return rows


# --- sections -----------------------------------------------------------------------------------------


def _stages_section(stages: list[tuple[str, str]]) -> str:
    return "\n".join(f"{i}. `{name}`: {what}" for i, (name, what) in enumerate(stages, 1))


def _provenance_section(provenance: dict, params: dict) -> str:
    provenance = public(provenance)
    facts = [f"- params hash (all sections but `executor`, `ingest.source_policy` and `ingest.images`): "
             f"`{digest(content(params))}`"]
    facts += [f"- {key}: {_cell(value)}" for key, value in provenance.items() if not isinstance(value, (dict, list))]
    rows, columns = [], ["stage"]
    for stage, value in provenance.items():
        if isinstance(value, (dict, list)):
            for entry in value if isinstance(value, list) else [value]:
                entry = entry if isinstance(entry, dict) else {"value": entry}
                columns += [k for k in entry if k not in columns]
                rows.append((stage, entry))
    table = _table(columns, [[stage] + [entry.get(c) for c in columns[1:]] for stage, entry in rows]) if rows else ""
    return "\n".join(facts) + ("\n\n" + table if table else "")


_THRESHOLD_SECTIONS = ("qa", "dedup", "split", "audit")
_THRESHOLD_KEY = re.compile(r"min_|max_|iou|threshold|similarity|rounds|divide_above|work_side")


def _thresholds_section(params: dict) -> str:
    """Every QA, dedup, split and audit setting, and the numeric limits the annotation stages ran with."""
    rows = []
    for section in ("tag", "segment", "caption_regions", "caption_scene", "redact"):
        rows += [[f"{section} / {k}", v] for k, v in _flatten(params.get(section, {})) if _THRESHOLD_KEY.search(k)]
    for section in _THRESHOLD_SECTIONS:
        rows += [[f"{section} / {k}", v] for k, v in _flatten(params.get(section, {}))]
    return _table(["setting", "value"], public(rows))


def _changelog_section(changelog: list[dict]) -> str:
    rows = [
        [e["version"], e.get("previous"), ", ".join(f"{s}: {n}" for s, n in e["images"].items()) or "none",
         *(e.get(kind) for kind in ("added", "removed", "changed", "moved"))]
        for e in reversed(changelog)
    ]
    return (
        "Newest first; counts are images, compared with the version this one follows (`groundcap diff OLD NEW` "
        "lists them). An image keeps its split in every later version.\n\n"
        + _table(["version", "follows", "images", "added", "removed", "changed", "moved"], rows)
    )


def _plots_section(plots: list[str]) -> str:
    titles = {"regions_per_image": "Regions per image", "caption_words": "Caption length (words)",
              "qa_scores": "Image QA score"}
    return "\n\n".join(f"![{titles.get(Path(p).stem, Path(p).stem)}]({p})" for p in plots) or "No plots."


def _pancap_note(features: dict[str, Features]) -> str:
    if PANCAP_TEXT not in features["default"]:
        return ""
    return (f"\n`{PANCAP_TEXT}` is the scene caption rendered Pancap-style: each grounded phrase followed by "
            "its region's box `[x1, y1, x2, y2]` in 0-1 image coordinates.")


def _stats_section(stats: dict) -> str:
    summary = _table(
        ["split", "images", "regions", "regions/image (mean)", "min", "max", "short caption (words)",
         "detailed caption (words)", "scene caption (words)", "grounded phrases/scene caption"],
        [
            [split, s["images"], s["regions"], s["regions_per_image"]["mean"], s["regions_per_image"]["min"],
             s["regions_per_image"]["max"], s["words"]["short_caption"], s["words"]["detailed_caption"],
             s["words"]["scene_caption"], s["references_per_scene_caption"]]
            for split, s in stats.items()
        ],
    )  # fmt: skip
    labels = _table(
        ["split", "top labels (regions)"],
        [[split, Markdown(", ".join(f"{literal(label)} ({n})" for label, n in s["top_labels"])) or None]
         for split, s in stats.items()],
    )
    panoptic = _table(
        ["split", "entity coverage (mean)", "median", "min", "stuff regions", "object regions", "part regions"],
        [[split, s["coverage"]["mean"], s["coverage"]["median"], s["coverage"]["min"],
          *(s["granularity"][g] for g in ("stuff", "object", "part"))] for split, s in stats.items()],
    )
    return (f"{summary}\n\nMost frequent region labels:\n\n{labels}\n\nHow much of each image its entities cover "
            "(stuff and object regions, which never overlap; a share of the pixels), and the regions per "
            f"granularity (a part region's `parent_id` is the entity it belongs to):\n\n{panoptic}"
            f"{_region_sources(stats)}")


def _region_sources(stats: dict) -> str:
    """Where the regions came from, when some came with the source (``given:<kind>``) or from people who
    audited the release (``human``: entities the engine missed) rather than a segmenter."""
    names = sorted({source for s in stats.values() for source in s["region_sources"]})
    if not any(n.startswith("given") or n == HUMAN for n in names):
        return ""
    rows = [[split, *(s["region_sources"].get(n, 0) for n in names)] for split, s in stats.items()]
    human = sum(s["region_sources"].get(HUMAN, 0) for s in stats.values())
    return ("\n\nWhere the regions came from (`source`): `given:<kind>` regions are the masks the source "
            f"came with (`segment.given`), `{HUMAN}` regions the {_count(human, 'entity', 'entities')} people drew "
            "in the audit because the engine missed them (mask, label and captions by a person), the others a "
            "segmenter's:\n\n"
            + _table(["split", *names], rows))


def _tars(release_dir: Path, split: str) -> list[Path]:
    return sorted((release_dir / "wds").glob(f"{split}-*.tar"))


_DATA_LINE = {
    "embed": "- `data/{split}-NNNNN-of-NNNNN.parquet`: config `default`, one row per image, image bytes embedded "
             "(the only copy of them).\n",
    "reference": "- `data/{split}-NNNNN-of-NNNNN.parquet`: config `default`, one row per image, without its pixels: "
                 "`origin` names it in its source (`kind`, `path`) with the SHA-256 and size of the bytes "
                 "`groundcap hydrate` rebuilds from your copy of that source (see below).\n"
                 "- `data/hydrate.json`: the build's params that `groundcap hydrate` replays.\n",
}


_HYDRATE_NOTE = ("\n\nThis release holds no image bytes. Rebuild the release with its images from your own copy of "
                 "the source (each image is checked against its SHA-256; a missing or changed one is named, never "
                 "replaced):\n\n```bash\npip install groundcap\ngroundcap hydrate path/to/this/release --source "
                 "path/to/your/copy --out with-images\n```")


def _layout_section(release_dir: Path, splits, images: str) -> str:
    rows = []
    for split in splits:
        rows.append([
            split,
            len(shard_files(release_dir, "data", split)),
            len(shard_files(release_dir, "regions", split)),
            len(_tars(release_dir, split)),
            f"coco/{split}.json" if (release_dir / "coco" / f"{split}.json").is_file() else None,
        ])  # fmt: skip
    wds = (
        "- `wds/{split}-NNNNN.tar`: WebDataset shards, one sample per image: `{image_id}.jpg|png` (the same "
        "bytes as `data/`) and `{image_id}.json` (size, regions, scene caption, QA score). A split without "
        "images has no tar.\n"
        "- `wds/{split}.index.json`: the split's shard index (tars and sample counts) for `wids.ShardListDataset`.\n"
    ) if any(row[3] for row in rows) else ""
    return (
        _DATA_LINE[images] +
        "- `regions/{split}-NNNNN-of-NNNNN.parquet`: config `regions`, one row per region, annotations only, "
        "keyed by `image_id`.\n"
        + wds +
        "- `coco/{split}.json`: COCO-style instances (RLE masks), one annotation per region; category ids are "
        "shared by all splits; each image carries its `scene_caption`.\n"
        "- `plots/*.png`: the plots above.\n"
        "- `changelog.json`: the changelog above, machine-readable.\n"
        "- `croissant.json`: Croissant 1.0 metadata with the Responsible-AI fields, from the records of this card.\n"
        "- `checksums.json`: path, size and SHA-256 of every other file.\n\n"
        + _table(["split", "data shards", "regions shards", "wds tars", "coco"], rows)
    )


def _readers(release_dir: Path, splits) -> str:
    """How to read the opt-in formats this release holds, each from its first split ("" when it holds none)."""
    readers = []
    tars = next(((s, len(t)) for s in splits if (t := _tars(release_dir, s))), None)
    if tars:
        urls = f"wds/{tars[0]}-{{00000..{tars[1] - 1:05d}}}.tar"
        readers.append(f'import webdataset as wds\nds = wds.WebDataset("{urls}", shardshuffle=False).decode("pil")')
    coco = next((s for s in splits if (release_dir / "coco" / f"{s}.json").is_file()), None)
    if coco:
        readers.append(f'from pycocotools.coco import COCO\ncoco = COCO("coco/{coco}.json")')
    return "\n\n```python\n" + "\n\n".join(readers) + "\n```" if readers else ""


def _usage_section(release: dict, release_dir: Path, splits) -> str:
    version = tag(str(release["version"]))
    # on the Hub, the version is a tag; in a folder target (`groundcap publish --to`), a folder
    repo, revision = (release["repo_id"], f', revision="{version}"') if release.get("repo_id") else \
        (f"path/to/{release['name']}/{version}", "")
    more = _readers(release_dir, splits)
    if release["images"] == "reference":
        more = _HYDRATE_NOTE + more
    return f"""```python
from datasets import load_dataset

images = load_dataset("{repo}"{revision})              # config "default": one row per image, with its pixels
regions = load_dataset("{repo}", "regions"{revision})  # one row per region, annotations keyed by image_id

row = images["train"][0]
row["image"]                  # PIL image
row["regions"][0]["segmentation"]  # COCO RLE {{"size": [h, w], "counts": str}}

from pycocotools import mask as mask_utils
seg = row["regions"][0]["segmentation"]
mask = mask_utils.decode({{"size": seg["size"], "counts": seg["counts"].encode()}})  # HxW uint8
```

Scene captions mark grounded phrases as `<rN>phrase</rN>`, N being a `region_id` of the same image;
`groundcap.grounding.render_boxes` turns them into Pancap-style `phrase [x1, y1, x2, y2]` (0-1 coordinates).

A region trainer gets each region with its image's pixels and its mask, joined by `image_id` without a copy:

```python
from groundcap.releases.regions import load_regions  # pip install groundcap

regions = load_regions("{repo}", "train"{revision})
row = regions[0]  # the regions config's columns, plus "image" (PIL) and "mask" (HxW bool)
```{more}"""


def limitations(params: dict) -> list[str]:
    """What a user must know about the annotations under ``params`` (the card's list and Croissant's)."""
    segment, tag = params.get("segment", {}), params.get("tag", {})
    items = ["All annotations are machine-generated: masks, labels and captions can be wrong."]
    if "work_side" in segment:
        items.append(
            f"Masks were computed at a longest side of {segment['work_side']} px and scaled to the full image, "
            "so boundaries are approximate on large images."
        )
    if "max_regions" in segment:
        items.append(f"At most {segment['max_regions']} regions per image are kept; small entities may be missing.")
    if detectors := tag.get("detectors"):
        items.append(f"Region labels come from the configured taggers/detectors ({', '.join(detectors)}).")
    if params.get("caption_regions", {}).get("captioner") == "attributes":
        items.append(
            "Region captions come from the embedded attribute captioner: they state measured attributes "
            "(named colours, size, position, shape, texture, OCR text), not a vision-language model's description."
        )
    if params.get("caption_scene", {}).get("composer") == "geometry":
        items.append("Scene captions state relations computed from region geometry, not scene understanding.")
    items.append("QA decisions are automatic, with the thresholds in `params.yaml`; see the QA summary.")
    return items


def _qa_section(qa_summary: dict, params: dict) -> str:
    """What the automatic checks decided, what dedup removed, and what people audited (or that nobody did)."""
    if not qa_summary:
        return "No QA summary was recorded."
    summary = dict(qa_summary)
    audit = summary.pop("audit", None) or {}
    accuracy = summary.pop("engine_accuracy", None)
    evidence = summary.pop("evidence", None) or {}
    qa = params.get("qa", {})
    lines = [
        "Every region's captions were checked against its pixels (colour, position, area, count and quoted-text "
        "claims, and the scene caption's relations between regions; materials are recorded, unverifiable; "
        f"contradicted claims: `{qa.get('evidence', {}).get('action', 'fail')}`) and against a second, "
        f"independent model (`crosscheck.captioner`: `{params.get('crosscheck', {}).get('captioner')}`; "
        f"disagreement: `{qa.get('consistency', {}).get('action', 'fail')}`). Near-duplicate images and captions "
        "were clustered, and every cluster lies in one split.",
        "",
        f"**Human audit:** {audit.get('message') or 'not recorded'}."
        + ("" if audit.get("audited") else " Nobody has reviewed a sample of this release, so its error rate "
           "is not estimated and it has no human_test split."),
    ]
    if audit.get("audited"):
        lines += ["", _table(["item", "value"], _data_rows({k: v for k, v in audit.items() if k != "message"}))]
    lines += _accuracy_lines(accuracy)
    if evidence:
        columns = ("parsed", "supported", "contradicted", "unverifiable")
        lines += ["", "Claims read from the captions, by kind, and the pixel evidence's verdicts on them:", "",
                  _table(["claim kind", *columns], [[literal(kind), *(counts.get(c, 0) for c in columns)]
                                                    for kind, counts in sorted(evidence.items())])]
    lines += ["", _table(["item", "value"], _data_rows(summary))]
    return "\n".join(lines)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


_METADATA = ("Every released image is stripped of its EXIF (GPS position, camera make and serial number, maker "
             "notes), XMP, IPTC and comments; its pixels and ICC profile are kept.")


def _privacy_section(redactions: dict, total: int, params: dict, provenance: dict) -> str:
    """Whether the images were redacted (``release.redact``), what was blurred and which detector found it."""
    mode = params["release"].get("redact", "none")
    if mode == "none":
        return ("No redaction (`release.redact: none`): the images are released as ingested; faces and licence "
                f"plates in them are not blurred. {_METADATA}")
    stamps = [s for s in provenance.get("redact") or [] if isinstance(s, dict)]
    detectors = ", ".join(f"`{_cell(s.get('backend'))}` ({_cell(s.get('model'))})" for s in stamps) \
        or ", ".join(f"`{_cell(d)}`" for d in redactions["detectors"]) or "none recorded"
    boxes = dict(redactions["boxes"])
    faces, plates = boxes.pop("face", 0), boxes.pop("license plate", 0)
    other = "".join(f", {n} x {_cell(label)}" for label, n in boxes.items())
    return (
        f"Faces and licence plates are blurred in the released image bytes (`release.redact: {mode}`), as SA-1B "
        f"did: {_count(faces, 'face', 'faces')} and {_count(plates, 'licence plate', 'licence plates')}{other} "
        f"blurred in {redactions['images']} of {_count(total, 'image', 'images')}; detector: {detectors}.\n\n"
        "Masks, captions and QA were computed on the original pixels. A blurred image is stored as PNG "
        "(lossless), so its pixels outside the blurred boxes are the source's; its `redactions` (in `default`, "
        "the WebDataset JSON and the COCO image entry) list each box (`[x, y, w, h]`, padding included), label, "
        "score and detector. Detection is automatic: a face or plate the detector missed is not blurred.\n\n"
        + _METADATA
    )


def _accuracy_lines(accuracy: dict | None) -> list[str]:
    """The machine captions scored against people's corrections on human_test (``groundcap eval``'s metrics)."""
    if not accuracy:
        return []
    scene, region = accuracy.get("scene") or {}, accuracy.get("region") or {}
    rows = [[f"scene {dim} F1", (scene.get(dim) or {}).get("f1")]
            for dim in ("tags", "locations", "attributes", "relations", "global")]
    rows.append(["scene overall (PancapScore weights)", f"{scene.get('overall')} of {scene.get('overall_max')}"])
    rows += [[f"region {k}", region.get(k)]
             for k in ("positive", "negative", "dlc", "recognized", "uniqueness", "reference_uniqueness")]
    return ["", f"**Engine accuracy on human_test** ({accuracy['images']} images people checked; the machine's "
            f"captions scored against the people's, judge `{accuracy['judge']}`, metrics as in `groundcap eval`: "
            "PancapScore-style scene F1s, DLC-Bench-style region scores in [-1, 1]):", "",
            _table(["metric", "value"], rows)]


def _licenses_table(licenses: dict) -> str:
    """Released images per licence their source states; empty when no source stated any."""
    if not any(name is not None for name in licenses):
        return ""
    rows = sorted(licenses.items(), key=lambda kv: (-kv[1], kv[0] or ""))
    return "Image licences, as the source states them per image:\n\n" + _table(
        ["licence", "images"], [[literal(name) if name else "(not stated)", n] for name, n in rows])


def _declaration(release: dict, declared: Declared) -> str:
    """How the images' licence in the card's YAML was reached: from the sources, or by the user's override."""
    fields = (("license", declared.license), ("name", declared.name), ("link", declared.link))
    said = ", ".join(f"{key} {literal(value)}" for key, value in fields if value)
    if declared.override:
        return (f"Images: {said}, declared by `release.license` over what the sources state (below), because: "
                f"{literal(release.get('license_reason') or '')}")
    if declared.license == "unknown":
        return ("Images: license unknown: no source stated a licence for these images. Find each image's terms at "
                "its source before redistributing it.")
    if len(declared.listed) > 1:
        return (f"Images: {said}: the sources state different licences per image "
                f"({', '.join(literal(x) for x in declared.listed)}); each image's own terms apply to it.")
    return f"Images: {said}, the licence the sources state for every image."


def sources_text(params: dict, licenses: dict | None = None) -> str:
    """The licences and where the images come from (the card's section and Croissant's data collection);
    ``licenses``: released images per licence their source stated."""
    release = params["release"]
    parts = [_declaration(release, declare(release, licenses or {})),
             f"Annotations (masks, captions, QA fields), apart from the images: license "
             f"{literal(release['annotations_license'])} (`release.annotations_license`)."]
    if table := _licenses_table(licenses or {}):
        parts.append(table)
    sources = release.get("sources")
    if isinstance(sources, str):
        parts.append(sources.strip())
    elif sources:
        parts.append("\n".join(f"- {literal(s)}" for s in sources))  # names, maybe gathered from the data
    else:
        parts.append(
            "The sources of the images are not documented in this release (`release.sources`); check the "
            "license of each source image before redistributing it."
        )
    return "\n\n".join(parts)


def citation(release: dict) -> str:
    """The release's BibTeX entry (the card's citation and Croissant's ``citeAs``)."""
    key = re.sub(r"\W+", "_", release["name"])
    return f"""@misc{{{key},
  title        = {{{release['pretty_name']}}},
  note         = {{Version {release['version']}, built with groundcap}},
  howpublished = {{{release.get('repo_id') or release['name']}}}
}}"""


def render(release_dir: str | Path, params: dict, *, stages: list[tuple[str, str]], provenance: dict,
           qa_summary: dict, changelog: list[dict], plots: list[str], splits=SPLITS,
           licenses: dict | None = None) -> str:
    """The card's full text (YAML front matter and body); ``stages``: (name, what it does) in order;
    ``licenses``: released images per licence their source stated (None: not stated)."""
    release_dir = Path(release_dir)
    licenses = licenses or {}
    release = params["release"]
    features = release_configs(params["build"], release["images"])
    stats = {split: split_stats(release_dir, split) for split in splits}
    declared = _declared(release_dir, splits)
    total = sum(s["images"] for s in stats.values())
    images_license = declare(release, licenses)
    license_extra = {k: v for k, v in (("license_name", images_license.name), ("license_link", images_license.link))
                     if v}
    data = DatasetCardData(
        license=images_license.license,
        pretty_name=release["pretty_name"],
        language=["en"],
        annotations_creators=["machine-generated"],
        task_categories=TASK_CATEGORIES,
        size_categories=[size_category(total)],
        tags=TAGS,
        **license_extra,
        configs=_configs(declared),
        dataset_info=_dataset_info(declared, features),
    )
    configs = _table(
        ["config", "one row per", "splits", "features"],
        [[c, _ROWS_OF[c], list(declared.get(c, [])), ", ".join(f"`{f}`" for f in features[c])] for c in CONFIG_DIRS],
    )
    if empty := [f"`{CONFIG_DIRS[c]}/{s}-*`" for c in CONFIG_DIRS for s in splits if s not in declared.get(c, {})]:
        configs += (
            f"\n\nWithout examples in this release, so not declared (`load_dataset` cannot load an empty split): "
            f"{', '.join(empty)}. Their zero-row Parquet shards are in the folder and carry the schema."
        )
    limits = "\n".join(f"- {item}" for item in limitations(params))
    body = f"""
# {release['pretty_name']}

Dense grounded captions, release `{release['name']}` version {release['version']}: for every image, masks
of its entities (objects, parts, stuff) as COCO RLE with a label, a short and a detailed caption per
region, and one scene caption whose phrases point at those regions. {total} images in all.

## Configs

{configs}

Boxes are `[x, y, w, h]` in pixels; `segmentation` is COCO RLE `{{"size": [h, w], "counts": str}}`;
`area` is the mask's pixel count.{_pancap_note(features)}

## Statistics

{_stats_section(stats)}

{_plots_section(plots)}

## How it was built

Built with `groundcap`, stage by stage:

{_stages_section(stages)}

{_provenance_section(provenance, params)}

Thresholds and settings:

{_thresholds_section(params)}

## Quality assurance

{_qa_section(qa_summary, params)}

## Privacy

{_privacy_section(redaction_stats(release_dir, splits), total, params, provenance)}

## Changelog

{_changelog_section(changelog)}

## Files

{_layout_section(release_dir, splits, release["images"])}

## Usage

{_usage_section(release, release_dir, splits)}

## Limitations

{limits}

## License and sources

{sources_text(params, licenses)}

## Citation

```bibtex
{citation(release)}
```
"""
    return f"---\n{data.to_yaml()}\n---\n{body}"


def write_card(release_dir: str | Path, params: dict, *, stages: list[tuple[str, str]], provenance: dict,
               qa_summary: dict, changelog: list[dict], plots: list[str], splits=SPLITS,
               licenses: dict | None = None) -> Path:
    """Write ``release_dir/README.md`` and validate it; raises ValueError listing any problem."""
    release_dir = Path(release_dir)
    text = render(release_dir, params, stages=stages, provenance=provenance, qa_summary=qa_summary, changelog=changelog,
                  plots=plots, splits=splits, licenses=licenses)
    path = atomic.write_text(release_dir / "README.md", text)
    if problems := validate_card(path):
        raise ValueError(f"{path.name} is not a valid dataset card:\n" + "\n".join(problems))
    return path


def redeclare(release_dir: str | Path, build: dict, reference: str | Path) -> Path:
    """Declare in a release's card the features and sizes its Parquet files now have, embedded images
    (``groundcap hydrate`` put them back into the reference release ``reference``), and list the files it now
    holds (the WebDataset tars too) and how to read them; the rest of the card is kept."""
    path, reference = Path(release_dir) / "README.md", Path(reference)
    card = DatasetCard(path.read_text(encoding="utf-8"))
    card.data.dataset_info = _dataset_info(_declared(path.parent, SPLITS), release_configs(build))
    for old, new in ((_layout_section(reference, SPLITS, "reference"), _layout_section(path.parent, SPLITS, "embed")),
                     (_HYDRATE_NOTE + _readers(reference, SPLITS), _readers(path.parent, SPLITS))):
        card.text = card.text.replace(old, new)
    atomic.write_text(path, card.content)
    if problems := validate_card(path):
        raise ValueError(f"{path.name} is not a valid dataset card:\n" + "\n".join(problems))
    return path


def validate_card(path: str | Path) -> list[str]:
    """Problems with a release's card; empty when it is valid.

    Checks that the card parses and its metadata round-trips through ``DatasetCard``, that every
    ``data_files`` glob matches a file, that the declared features are those stored in the Parquet
    files and the declared ``num_examples`` their row counts, that every linked plot exists, and
    that no local path leaked into the text.
    """
    path = Path(path)
    release_dir = path.parent
    text = path.read_text(encoding="utf-8")
    try:
        card = DatasetCard(text)
    except ValueError as exc:
        return [f"card does not parse: {exc}"]
    problems = []
    if DatasetCard(card.content).data.to_dict() != card.data.to_dict():
        problems.append("card metadata does not round-trip through DatasetCard")
    configs = card.data.get("configs") or []
    if not configs:
        problems.append("no configs declared")
    infos = card.data.get("dataset_info") or []
    infos = {info.get("config_name", "default"): info for info in ([infos] if isinstance(infos, dict) else infos)}
    for config in configs:
        name = config["config_name"]
        info = infos.get(name)
        if info is None:
            problems.append(f"config {name}: no dataset_info")
        declared = {s["name"]: s["num_examples"] for s in (info or {}).get("splits", [])}
        features = Features._from_yaml_list(info["features"]) if info else None
        for entry in config.get("data_files", []):
            patterns = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
            files = sorted({f for p in patterns for f in release_dir.glob(p) if f.is_file()})
            if not files:
                problems.append(f"config {name}, split {entry['split']}: {patterns} match no file")
                continue
            if (expected := declared.get(entry["split"])) != (rows := parquet_sizes(files)[0]):
                problems.append(f"config {name}, split {entry['split']}: declares {expected} rows, files hold {rows}")
            if features is not None and any(Features.from_arrow_schema(pq.read_schema(f)) != features for f in files):
                problems.append(f"config {name}, split {entry['split']}: declared features differ from the files'")
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card.text):
        if not (release_dir / link).is_file():
            problems.append(f"card links {link}, which is not in the release")
    for local in {str(release_dir.resolve()), str(Path.home())} - {"/"}:
        if local in text:
            problems.append(f"card contains a local path ({local})")
    return problems
