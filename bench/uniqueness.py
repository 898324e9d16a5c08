"""Region caption uniqueness (``annotators.uniqueness``) on labelled pairs of captions, vs word overlap.

Each pair is two regions' (short, detailed) captions from one image, labelled by hand: ``clash`` when a
reader could take either region for the other, ``distinct`` when the captions tell them apart. Two sets:
``tune``, the pairs the threshold (``caption_regions.unique_max_similarity``) was chosen on, and
``held-out``, written before the rule was first run on it and never changed since. Beside the rule, the
one it replaced: word overlap (Jaccard) of the short captions alone, at least 0.9.
"""

from __future__ import annotations

import re
import time

from groundcap import params
from groundcap.annotators import uniqueness
from groundcap.annotators.base import RegionCaption
from groundcap.qa import consistency

Pair = tuple[tuple[str, str], tuple[str, str]]

TUNE: dict[str, list[Pair]] = {
    "clash": [
        (("a gray region", "A gray region of the image."), ("the gray region", "A gray area of the picture.")),
        (("a small dog", "A small brown dog sitting on the grass."),
         ("a little puppy", "A little brown puppy sitting on the lawn.")),
        (("a window", "A rectangular window with a white frame."),
         ("a window", "A rectangular glass window framed in white.")),
        (("a person", "A person standing still."), ("a man", "A man who is standing still.")),
        (("a car", "A parked car."), ("an automobile", "A parked automobile.")),
        (("a tree", "A green leafy tree."), ("a tree", "A leafy green tree.")),
        (("a white cup", "A white ceramic cup."), ("a white mug", "A white ceramic mug.")),
        (("the sky", "A clear blue sky."), ("blue sky", "A clear blue sky overhead.")),
        (("a chair", "A wooden chair."), ("a wooden seat", "A chair made of wood.")),
        (("a red and gray car", ""), ("a gray and red car", "")),
        (("a bird", "A small bird perched on a branch."), ("a small bird", "A little bird sitting on a branch.")),
        (("a building", "A tall building with many windows."),
         ("a tall building", "A high-rise with lots of windows.")),
    ],
    "distinct": [
        (("a white cup on the left", "A white cup at the left of the table."),
         ("a white cup on the right", "A white cup at the right of the table.")),
        (("a man in a red shirt", "A man wearing a red shirt."),
         ("a man in a blue shirt", "A man wearing a blue shirt.")),
        (("a red car", "A red car parked by the road."), ("a blue bicycle", "A blue bicycle leaning on a wall.")),
        (("a dog", "A brown dog lying down."), ("a cat", "A brown cat lying down.")),
        (("two people", "Two people walking together."), ("three people", "Three people walking together.")),
        (("a sign", 'A sign reading "STOP".'), ("a sign", 'A sign reading "EXIT".')),
        (("a wooden table", "A wooden table."), ("a metal table", "A metal table.")),
        (("a gray region at the top left", "A gray region at the top left of the image."),
         ("a gray region at the bottom right", "A gray region at the bottom right of the image.")),
        (("a tall tree", "A tall pine tree next to the house."),
         ("a bush", "A small round bush in front of the fence.")),
        (("a window", "A small round window high up in the tower."),
         ("a window", "A large shop window at street level.")),
        (("a person", "A woman holding an umbrella in the rain."),
         ("a person", "A child riding a bicycle on the path.")),
        (("a plate", "A plate of pasta with tomato sauce."), ("a plate", "An empty plate stacked on others.")),
    ],
}

HELD_OUT: dict[str, list[Pair]] = {
    "clash": [
        (("a horse", "A brown horse grazing in the field."),
         ("a brown horse", "A brown horse eating grass in a pasture.")),
        (("a bottle", "A clear plastic water bottle."), ("a plastic bottle", "A transparent plastic bottle of water.")),
        (("a lamp", "A table lamp with a white shade."), ("a table lamp", "A lamp with a white lampshade on a table.")),
        (("a boat", "A small boat floating on the water."), ("a small boat", "A little boat on the water.")),
        (("a cloud", "A white fluffy cloud."), ("a white cloud", "A fluffy white cloud in the sky.")),
        (("a bicycle", "A black bicycle parked by the wall."), ("a black bike", "A black bike parked against a wall.")),
        (("a sofa", "A gray fabric sofa."), ("a gray couch", "A gray couch covered in fabric.")),
        (("a pillow", "A soft white pillow."), ("a white cushion", "A soft white cushion.")),
        (("grass", "Green grass covering the ground."), ("a lawn", "A green lawn of grass.")),
        (("a flower", "A red flower in bloom."), ("a red flower", "A blooming red flower.")),
        (("a book", "A closed book with a blue cover."), ("a blue book", "A book with a blue cover, closed.")),
        (("a laptop", "An open laptop computer."), ("an open laptop", "A laptop that is open.")),
    ],
    "distinct": [
        (("a horse", "A brown horse grazing in the field."), ("a horse", "A white horse pulling a cart.")),
        (("a bottle", "A green glass bottle on the shelf."), ("a bottle", "A small plastic bottle of shampoo.")),
        (("a lamp", "A street lamp on a tall metal pole."), ("a lamp", "A small desk lamp next to the computer.")),
        (("a boat", "A large cruise ship docked at the port."), ("a boat", "A small red canoe on the lake.")),
        (("a person", "A man on the left of the image wearing a hat."),
         ("a person", "A man on the right of the image wearing a hat.")),
        (("a car", "One car parked in the driveway."), ("cars", "Four cars waiting at the traffic light.")),
        (("a sign", 'A street sign that says "MAIN ST".'), ("a sign", 'A street sign that says "OAK AVE".')),
        (("a building", "A tall glass skyscraper."), ("a building", "A small wooden cabin.")),
        (("a dog", "A black dog running on the beach."), ("a dog", "A golden dog sleeping on the couch.")),
        (("a cup", "A cup of coffee on the table."), ("a plate", "A plate with a sandwich on the table.")),
        (("a tree", "A tall tree at the top of the hill."), ("a tree", "A small tree at the bottom of the hill.")),
        (("a chair", "A red plastic chair."), ("a chair", "A black leather office chair.")),
    ],
}

_STOP = {"a", "an", "the", "of", "in", "on", "at", "with", "and", "its", "it", "is"}


def word_overlap(a: str, b: str) -> float:
    """The replaced rule's measure: Jaccard overlap of the short captions' content words."""
    wa, wb = ({w for w in re.findall(r"[a-z0-9]+", t.lower()) if w not in _STOP} for t in (a, b))
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def scores(pairs: dict[str, list[Pair]], judged: dict[str, list[bool]]) -> dict:
    """Clashes found among true clashes (recall), distinct pairs called clashes (false alarms)."""
    return {"clashes": len(pairs["clash"]), "distinct": len(pairs["distinct"]),
            "recall": sum(judged["clash"]) / len(pairs["clash"]),
            "false_alarms": sum(judged["distinct"]) / len(pairs["distinct"])}


def bench_uniqueness() -> dict:
    threshold = params.defaults()["caption_regions"]["unique_max_similarity"]
    embedder = consistency.embedder(params.defaults()["caption_regions"]["unique_embedder"])
    embedder.encode(["warm up"])  # the first load takes seconds; timed below is the judging
    result = {}
    for name, pairs in (("tune", TUNE), ("held-out", HELD_OUT)):
        start = time.perf_counter()
        new = {label: [bool(uniqueness.clashes([RegionCaption(0, *a), RegionCaption(1, *b)], threshold, embedder))
                       for a, b in cases] for label, cases in pairs.items()}
        seconds = time.perf_counter() - start
        old = {label: [word_overlap(a[0], b[0]) >= 0.9 for a, b in cases] for label, cases in pairs.items()}
        now, before = scores(pairs, new), scores(pairs, old)
        print(f"uniqueness ({name}: {now['clashes']} clashing, {now['distinct']} distinct pairs): recall "
              f"{now['recall']:.2f}, false alarms {now['false_alarms']:.0%} (cosine >= {threshold} + claims, "
              f"{1000 * seconds / (now['clashes'] + now['distinct']):.0f} ms a pair); short-caption word overlap "
              f">= 0.9: recall {before['recall']:.2f}, false alarms {before['false_alarms']:.0%}")
        result[name], result[f"{name} word overlap"] = now, before
    return result


if __name__ == "__main__":
    bench_uniqueness()
