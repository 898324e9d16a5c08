"""``load_regions``: a region trainer's rows, each region with its image's pixels, its mask and captions.

A release stores each image's bytes once, in the ``default`` config (``data/``); the ``regions`` config
(``regions/``) is annotations only, keyed by ``image_id``, so the Hub never holds a second copy of the
pixels. This joins the two without copying any: the regions rows get a ``datasets`` transform that, for
each row read, looks its image up by id in the memory-mapped default config (a PIL image, as ``datasets``
decodes it) and decodes its RLE into a mask. Shuffling, ``select`` and a torch ``DataLoader`` (workers
included: the transform pickles) keep it.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from groundcap import masks
from groundcap.errors import ReleaseError

if TYPE_CHECKING:
    from datasets import Dataset


def load_regions(path: str, split: str, **kwargs) -> Dataset:
    """One row per region of ``split`` of the release at ``path`` (a folder or a Hub repo id), the
    ``regions`` config's columns plus ``image`` (PIL) and ``mask`` (HxW bool numpy array).

    ``kwargs`` go to both ``datasets.load_dataset`` calls (``revision``, ``cache_dir``, ``token``, ...).
    Not for streaming: a streamed ``default`` config already gives each image with its regions.
    """
    from datasets import load_dataset

    if kwargs.get("streaming"):
        raise ReleaseError("load_regions reads the release into the datasets cache; to stream, use "
                           "load_dataset(path, streaming=True): each image row carries its regions")
    images = load_dataset(path, split=split, **kwargs)
    if "image" not in images.column_names:
        raise ReleaseError(f"{path} holds no pixels (release.images: reference): rebuild them from your copy of its "
                           "source with `groundcap hydrate`, then load the hydrated folder")
    images = images.select_columns(["image_id", "image"])
    regions = load_dataset(path, "regions", split=split, **kwargs)
    index = {image_id: i for i, image_id in enumerate(images["image_id"])}
    orphans = sorted(set(regions["image_id"]) - index.keys())
    if orphans:
        raise ReleaseError(f"{len(orphans)} image(s) of the regions config of {path} ({split}) are not in its "
                           f"default config, e.g. {orphans[0]}: the two configs come from different builds")
    return regions.with_transform(partial(_attach, images.select_columns(["image"]), index))


def _attach(images: Dataset, index: dict[str, int], batch: dict) -> dict:
    """A batch of regions rows with each row's image and decoded mask."""
    batch["image"] = images[[index[image_id] for image_id in batch["image_id"]]]["image"]
    batch["mask"] = [masks.decode(seg) for seg in batch["segmentation"]]
    return batch
