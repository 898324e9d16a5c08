"""COCO-style instance JSON per split (``coco/{split}.json``), loadable with ``pycocotools.coco.COCO``.

Image ids are 1-based in arrival order and annotation ids 1-based per split, so the same records give
the same file. Category ids come from the sorted labels of *all* splits, so a label has the same id
in every split's file; since labels are only known at the end, images and annotations are spooled to
hidden JSON-lines files (metadata only, never image bytes) and the JSON is assembled at close, which
keeps memory bounded on million-image releases. Each file is written under a temporary name and
renamed. Every image entry carries its grounded ``scene_caption``, ``qa_score`` and ``redactions`` (the
boxes the privacy pass blurred), and its ``license``: the id, in ``licenses``, of the licence its source states
(``licenses.NOT_STATED`` where it states none; ids from the sorted names of all splits, as categories), or of
``release.license`` for every image where the user overrode the sources.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from groundcap import licenses
from groundcap.builders.columns import from_records
from groundcap.builders.webdataset import EXTENSIONS
from groundcap.storage import atomic
from groundcap.storage.parts import reset_dir


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class _Split:
    def __init__(self, directory: Path, split: str):
        self.images_path = atomic.temporary(directory / f"{split}.images.jsonl")
        self.annotations_path = atomic.temporary(directory / f"{split}.annotations.jsonl")
        self._images = open(self.images_path, "w", encoding="utf-8")
        self._annotations = open(self.annotations_path, "w", encoding="utf-8")
        self.n_images = self.n_annotations = 0
        self.tmp: Path | None = None

    def add(self, record: dict, labels: set[str], licence: str) -> None:
        self.n_images += 1
        image = {
            "id": self.n_images,
            "file_name": f"{record['image_id']}.{EXTENSIONS[record['format']]}",
            "width": record["width"],
            "height": record["height"],
            "license": licence,  # replaced by its id at close
            "image_id_str": record["image_id"],
            "scene_caption": record["scene_caption"],
            "qa_score": record["qa_score"],
            "redactions": record["redactions"],
        }
        self._images.write(_dumps(image) + "\n")
        for region in record["regions"]:
            self.n_annotations += 1
            labels.add(region["label"])
            seg = region["segmentation"]
            annotation = {
                "id": self.n_annotations,
                "image_id": self.n_images,
                "label": region["label"],  # replaced by category_id at close
                "segmentation": {"size": [int(v) for v in seg["size"]], "counts": seg["counts"]},
                "area": int(region["area"]),
                "bbox": [float(v) for v in region["bbox"]],
                "iscrowd": 0,
                "region_id": region["region_id"],
                "granularity": region["granularity"],
                "parent_id": region["parent_id"],
                "source": region["source"],
                "short_caption": region["short_caption"],
                "detailed_caption": region["detailed_caption"],
            }
            self._annotations.write(_dumps(annotation) + "\n")

    def write(self, path: Path, header: dict, category_ids: dict[str, int],
              license_ids: dict[str, int]) -> tuple[Path, Path]:
        """Assemble the JSON under a temporary name; ``(temporary, final)``."""
        self._images.close()
        self._annotations.close()
        tmp = atomic.temporary(path)
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(_dumps(header)[:-1])  # the header's closing brace comes after the two lists
            out.write(',"images":[')
            with open(self.images_path, encoding="utf-8") as lines:
                for i, line in enumerate(lines):
                    image = json.loads(line)
                    out.write(("," if i else "") + _dumps({**image, "license": license_ids[image["license"]]}))
            out.write('],"annotations":[')
            with open(self.annotations_path, encoding="utf-8") as lines:
                for i, line in enumerate(lines):
                    annotation = json.loads(line)
                    annotation = {"category_id": category_ids[annotation.pop("label")], **annotation}
                    out.write(("," if i else "") + _dumps(annotation))
            out.write("]}\n")  # fsynced when published (SplitFiles.publish)
        self.abort()
        self.tmp = tmp
        return tmp, path

    def abort(self) -> None:
        self._images.close()
        self._annotations.close()
        self.images_path.unlink(missing_ok=True)
        self.annotations_path.unlink(missing_ok=True)

    def discard(self) -> None:
        self.abort()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


class CocoJson:
    """Streams image records into ``coco/{split}.json``; ``info`` describes the release, ``override`` is the
    licence ``release.license`` declares for every image (None: each image's own)."""

    def __init__(self, release_dir: Path, splits: list[str], *, info: dict, override: str | None = None):
        self.directory = reset_dir(Path(release_dir) / "coco")
        self.info, self.override = info, override
        self._splits = {split: _Split(self.directory, split) for split in splits}
        self._labels: set[str] = set()
        self._licences: set[str] = set()

    def add(self, split: str, record: dict) -> None:
        self.add_table(split, from_records(split, [record]))

    def add_table(self, split: str, batch: pa.Table) -> None:
        spool = self._splits[split]
        for record in batch.drop_columns(["image"]).to_pylist():  # metadata only: it becomes JSON
            licence = self.override or record["license"] or licenses.NOT_STATED
            self._licences.add(licence)
            spool.add(record, self._labels, licence)

    def close(self) -> list[Path]:
        from groundcap.builders.files import SplitFiles

        return SplitFiles.publish(self.finish())

    def finish(self) -> list[tuple[Path, Path]]:
        labels, names = sorted(self._labels), sorted(self._licences)
        header = {
            "info": self.info,
            "licenses": [{"id": i, "name": name, "url": licenses.link(name) or ""} for i, name in enumerate(names, 1)],
            "categories": [{"id": i, "name": label, "supercategory": ""} for i, label in enumerate(labels, 1)],
        }
        category_ids = {label: i for i, label in enumerate(labels, 1)}
        license_ids = {name: i for i, name in enumerate(names, 1)}
        return [spool.write(self.directory / f"{split}.json", header, category_ids, license_ids)
                for split, spool in self._splits.items()]

    def abort(self) -> None:
        for spool in self._splits.values():
            spool.discard()
