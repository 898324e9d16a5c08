"""The release's ``croissant.json``: Croissant 1.0 metadata (JSON-LD) with the Responsible-AI fields.

Venues such as NeurIPS Datasets & Benchmarks ask for it. It says the same as the card, from the same
records: the licence and sources (``card.sources_text``), the limitations (``card.limitations``), the
backends and models of ``provenance`` (credential-like keys dropped by ``card.public``), the QA summary,
the citation. Its record sets are the two Parquet configs, their fields derived from the release's
``datasets.Features`` (``features.release_configs``); a ``split`` field comes from each shard's file
name. File sets are globs, so the file holds no checksum of the files it describes (``checksums.json``
covers it and them); nothing in it depends on the time or the folder, so a rebuild writes the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Features, Image, List, Value

from groundcap.builders import SPLITS
from groundcap.builders.features import release_configs
from groundcap.builders.parquet import CONFIG_DIRS
from groundcap.dataset_card.card import TAGS, citation, limitations, public, sources_text
from groundcap.dataset_card.stats import split_stats
from groundcap.licenses import NOT_STATED, declare, link
from groundcap.params import content, digest
from groundcap.storage import atomic

FILENAME = "croissant.json"
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
# The Croissant 1.0 context, as the specification lists it, with the RAI namespace
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
_DATA_TYPES = {"string": "sc:Text", "float32": "sc:Float", "float64": "sc:Float", "int32": "sc:Integer",
               "int64": "sc:Integer", "bool": "sc:Boolean"}
_DESCRIPTIONS = {
    "image": "The image (original encoded bytes).",
    "regions": "The image's regions: mask, box, label, short and detailed caption.",
    "segmentation": "The region's mask as COCO RLE.",
    "bbox": "The region's box [x, y, w, h] in pixels.",
    "scene_caption": "One grounded scene caption; <rN>phrase</rN> points at region N.",
    "short_caption": "A short caption of the region.",
    "detailed_caption": "A detailed caption of the region.",
    "qa_score": "The image's automatic QA score.",
}


def _source(file_set: str, column: str, json_path: str | None = None) -> dict:
    source = {"fileSet": {"@id": file_set}, "extract": {"column": column}}
    if json_path:
        source["transform"] = {"jsonPath": json_path}
    return source


def _field(record_set: str, name: str, feature, file_set: str, column: str, path: list[str]) -> dict:
    """The Croissant field of ``feature``; ``path`` is where its value lies inside ``column``'s cells
    (a list's items for the subfields of a repeated struct)."""
    field = {"@type": "cr:Field", "@id": f"{record_set}/{name}", "name": name}
    if name in _DESCRIPTIONS:
        field["description"] = _DESCRIPTIONS[name]
    if isinstance(feature, List) and isinstance(feature.feature, dict):  # a list of structs: one subfield per key
        field["repeated"] = True
        field["subField"] = [_field(f"{record_set}/{name}", key, sub, file_set, column, [key])
                             for key, sub in feature.feature.items()]
        return field
    if isinstance(feature, dict):  # a struct: one subfield per key, read from the same column
        field["subField"] = [_field(f"{record_set}/{name}", key, sub, file_set, column, [*path, key])
                             for key, sub in feature.items()]
        return field
    if isinstance(feature, List):
        field["repeated"] = True
        feature = feature.feature
    if isinstance(feature, Image):
        field["dataType"] = "sc:ImageObject"
        path = [*path, "bytes"]
    elif isinstance(feature, Value):
        field["dataType"] = _DATA_TYPES[feature.dtype]
    else:
        raise TypeError(f"no Croissant type for the feature {name}: {feature!r}")
    field["source"] = _source(file_set, column, ".".join(path) or None)
    return field


def _record_set(config: str, features: Features) -> dict:
    file_set = f"{config}-parquet"
    split = {
        "@type": "cr:Field", "@id": f"{config}/split", "name": "split", "dataType": "sc:Text",
        "description": "The split, from the shard's file name.",
        "source": {"fileSet": {"@id": file_set}, "extract": {"fileProperty": "fullpath"},
                   "transform": {"regex": rf"^(?:.*/)?{CONFIG_DIRS[config]}/([a-z_]+)-\d+-of-\d+\.parquet$"}},
    }
    fields = [_field(config, name, feature, file_set, name, []) for name, feature in features.items()]
    return {"@type": "cr:RecordSet", "@id": config, "name": config,
            "description": {"default": "One record per image, without its pixels: origin names it in its source."
                            if "origin" in features else "One record per image, with its pixels.",
                            "regions": "One record per region; its image is the default record set's of the same "
                                       "image_id."}[config],
            "field": [split, *fields]}


def _distribution(release_dir: Path) -> list[dict]:
    """The release's file sets: the Parquet configs, and the opt-in formats it holds."""
    sets = [(f"{config}-parquet", f"{directory}/*.parquet", "application/x-parquet",
             f"Parquet shards of the config {config}.") for config, directory in CONFIG_DIRS.items()]
    sets += [(key, glob, fmt, what) for key, glob, fmt, what in (
        ("webdataset-tars", "wds/*.tar", "application/x-tar", "WebDataset shards, one sample per image."),
        ("coco-json", "coco/*.json", "application/json", "COCO instances (RLE masks) with captions, per split."),
    ) if any(release_dir.glob(glob))]
    return [{"@type": "cr:FileSet", "@id": key, "name": key, "description": what, "encodingFormat": fmt,
             "includes": glob} for key, glob, fmt, what in sets]


def _models(provenance: dict) -> list[str]:
    """One line per backend that annotated the release: stage, backend, version, model."""
    lines = []
    for stage, value in public(provenance).items():
        for entry in value if isinstance(value, list) else [value] if isinstance(value, dict) else []:
            model = f" ({entry['model']})" if entry.get("model") else ""
            lines.append(f"{stage}: {entry.get('backend')} v{entry.get('version')}{model}")
    return lines


def _licenses(release: dict, licenses: dict) -> list[str]:
    """The images' licences as the card declares them (each one the sources state, with its link where known, or
    the override), then the annotations' own."""
    declared = declare(release, licenses)
    if declared.override:
        images = [f"{declared.license} ({declared.name})" if declared.name else declared.license,
                  *([declared.link] if declared.link else [])]
    else:
        images = [y for x in declared.listed or ("unknown",)
                  for y in ("unknown" if x == NOT_STATED else x, link(x)) if y]
    return [*images, f"annotations: {release['annotations_license']}"]


def render(release_dir: str | Path, params: dict, *, stages: list[tuple[str, str]], provenance: dict,
           qa_summary: dict, splits=SPLITS, licenses: dict | None = None) -> dict:
    """The Croissant document of the release in ``release_dir`` under ``params``; ``licenses``: released images
    per licence their source stated (None: not stated)."""
    release_dir = Path(release_dir)
    release = params["release"]
    counts = {split: split_stats(release_dir, split)["images"] for split in splits}
    models = _models(provenance)
    automatic = {k: v for k, v in (qa_summary or {}).items() if k != "audit"}
    audit = (qa_summary or {}).get("audit") or {}
    document = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": release["name"],
        "alternateName": release["pretty_name"],
        "description": (
            f"{release['pretty_name']}. Dense grounded captions: for every image, entity masks (COCO RLE) with a "
            "label, a short and a detailed caption per region, and one scene caption whose phrases point at the "
            f"regions. Images per split: {', '.join(f'{s}: {n}' for s, n in counts.items() if n) or 'none'}."
        ),
        "version": str(release["version"]),
        "license": _licenses(release, licenses or {}),
        "keywords": TAGS,
        "inLanguage": "en",
        "citeAs": citation(release),
        "isLiveDataset": False,
        "rai:dataCollection": sources_text(params, licenses),
        "rai:dataCollectionType": "Existing images, annotated automatically.",
        "rai:dataPreprocessingProtocol": (
            "Each file was validated (truncated, empty, non-image, too small, too large and decompression-bomb files "
            "rejected with their reason), EXIF-rotated and normalized where needed, and identified by the SHA-256 of "
            "its bytes; exact and near duplicates were clustered and each cluster kept in one split."
        ),
        "rai:dataAnnotationProtocol": (
            "Machine annotation, stage by stage: " + "; ".join(f"{name}: {what}" for name, what in stages)
            + f" Params hash: {digest(content(params))}."
        ),
        "rai:dataAnnotationPlatform": "groundcap (automatic pipeline); human audit in Label Studio or the HTML gallery",
        "rai:dataAnnotationAnalysis": (
            f"Automatic QA: {json.dumps(public(automatic), sort_keys=True)}."
            f" Human audit: {audit.get('message') or 'not recorded'}."
        ),
        "rai:machineAnnotationTools": models,
        "rai:dataBiases": (
            "The images are those of the sources above and share their selection biases. Region labels come from a "
            "fixed English vocabulary of the taggers and detectors, and captions reflect the models listed in "
            "machineAnnotationTools, with their own biases; nothing was rebalanced."
        ),
        "rai:dataLimitations": " ".join(limitations(params)),
        "rai:personalSensitiveInformation": (
            "The images were not screened for people, faces, licence plates or other personal information, and none "
            "was removed or blurred; text read from an image (OCR) can appear in its captions. Check the sources "
            "before use, and remove images on request."
        ),
        "rai:dataUseCases": "Training and evaluating region captioning, grounded captioning and segmentation models.",
        "rai:dataSocialImpact": "Machine-made captions can state wrong or stereotyped descriptions as fact.",
        "distribution": _distribution(release_dir),
        "recordSet": [_record_set(config, features) for config, features in
                      release_configs(params["build"], release["images"]).items()],
    }
    if release.get("repo_id"):  # the Hub organization or user that publishes it
        document["url"] = f"https://huggingface.co/datasets/{release['repo_id']}"
        document["creator"] = {"@type": "sc:Organization", "name": release["repo_id"].split("/")[0]}
    return document


def write_croissant(release_dir: str | Path, params: dict, *, stages: list[tuple[str, str]], provenance: dict,
                    qa_summary: dict, splits=SPLITS, licenses: dict | None = None) -> Path:
    """Write ``release_dir/croissant.json`` (atomically); the path."""
    document = render(release_dir, params, stages=stages, provenance=provenance, qa_summary=qa_summary, splits=splits,
                      licenses=licenses)
    return atomic.write_text(Path(release_dir) / FILENAME, json.dumps(document, indent=1, ensure_ascii=False) + "\n")


def redeclare(release_dir: str | Path, build: dict) -> Path:
    """Declare in a release's ``croissant.json`` the ``default`` record set its Parquet files now have,
    embedded images (``groundcap hydrate`` put them back into a reference release), and the file sets it now
    holds (the WebDataset tars too); the rest is kept."""
    path = Path(release_dir) / FILENAME
    document = json.loads(path.read_text(encoding="utf-8"))
    document["distribution"] = _distribution(path.parent)
    default = _record_set("default", release_configs(build)["default"])
    document["recordSet"] = [default if rs["@id"] == "default" else rs for rs in document["recordSet"]]
    return atomic.write_text(path, json.dumps(document, indent=1, ensure_ascii=False) + "\n")
