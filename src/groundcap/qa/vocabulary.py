"""The closed word lists ``qa.claims`` reads captions by (beyond the label vocabulary and the colour
names): irregular plurals, position words, numbers and vague quantities, materials and relations
between two regions; kept apart so the parsing rules stay short to read.

Each list is closed and conservative: a word that often means something else in captions ("one",
"some", "gold" as a material) is left out, since a misread claim can fail a true caption.
"""

from __future__ import annotations

# plurals the rules of ``claims.singular`` would get wrong
IRREGULAR = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
             "goose": "geese", "sheep": "sheep", "deer": "deer", "fish": "fish", "potato": "potatoes",
             "tomato": "tomatoes"}  # fmt: skip
# position words: (row, column) each names
AXES = {"top": ("top", None), "upper": ("top", None), "bottom": ("bottom", None), "lower": ("bottom", None),
        "left": (None, "left"), "right": (None, "right"),
        "center": ("middle", "center"), "centre": ("middle", "center"), "middle": ("middle", "center")}

# counts: "one" is left out ("one of the dogs", "one dog is ..." rarely count dogs)
NUMBERS = {w: i for i, w in enumerate(
    "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty".split(), 2)}
MULTIPLES = {"dozen": 12}  # "a dozen eggs", "two dozen eggs"
PAIR = "a pair of"  # two things, except nouns that name one thing as a pair ("a pair of scissors")
# quantities that name no number: parsed, never judged against a number
VAGUE = ("several", "many", "numerous", "multiple", "various", "countless", "few", "a few", "a couple of",
         "a number of", "a lot of", "lots of", "plenty of", "dozens of", "hundreds of", "a handful of",
         "a group of", "a bunch of", "a crowd of", "a herd of", "a flock of")

# materials: the word as written -> the material it names; two different ones for one region disagree.
# Words that are also colour names ("copper", "bronze", "gold", "silver") are colours, never materials.
MATERIALS = {
    **dict.fromkeys(("wood", "wooden", "timber", "plywood"), "wood"),
    **dict.fromkeys(("metal", "metallic", "steel", "iron", "aluminum", "aluminium", "chrome"), "metal"),
    "glass": "glass", "plastic": "plastic",
    **dict.fromkeys(("stone", "marble", "granite", "cobblestone"), "stone"),
    "brick": "brick",
    **dict.fromkeys(("fabric", "cloth", "textile", "cotton", "wool", "woolen", "woollen", "silk", "denim",
                     "velvet", "knitted"), "fabric"),
    **dict.fromkeys(("leather", "suede"), "leather"),
    **dict.fromkeys(("concrete", "cement"), "concrete"),
    "asphalt": "asphalt",
    **dict.fromkeys(("ceramic", "porcelain"), "ceramic"),
    **dict.fromkeys(("paper", "cardboard"), "paper"),
    "rubber": "rubber",
    **dict.fromkeys(("wicker", "rattan"), "wicker"),
}

# relations between two regions: canonical name first, then the phrases that say it
RELATIONS = {
    "left of": ("to the left of", "on the left of", "left of"),
    "right of": ("to the right of", "on the right of", "right of"),
    "above": ("on top of", "above", "over"),
    "below": ("below", "under", "underneath", "beneath"),
    "within": ("within", "inside", "in"),
    "around": ("around", "surrounding", "containing", "contains", "surrounds"),
    "in front of": ("in front of",),
    "behind": ("behind",),
    "next to": ("next to", "beside", "near", "alongside", "by"),
    "on": ("resting on", "lying on", "sitting on", "standing on", "on"),
    "holding": ("holding", "carrying"),
    "wearing": ("wearing",),
    "riding": ("riding",),
}
# what a relation reads as from the object's side, and the relation that cannot hold with it
CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above", "within": "around",
            "around": "within", "in front of": "behind", "behind": "in front of", "next to": "next to"}
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above", "on": "below",
            "within": "around", "around": "within", "in front of": "behind", "behind": "in front of"}
# words that may stand between a mention and its relation phrase: "<r1>the cup</r1> is resting on <r2>..."
RELATION_LEAD = ("is", "are", "was", "were", "lies", "lie", "sits", "sit", "stands", "stand", "rests", "located",
                 "positioned", "placed", "seen", "appear", "appears", "which", "that")

# given classes (COCO's categories, a Hub dataset's labels): other words a true caption names the class by;
# a caption that names one of these, the class or its head word ("plant" for "potted plant") names the class
CLASS_ALIASES = {
    "person": ("man", "woman", "boy", "girl", "child", "kid", "baby", "people", "player", "rider", "skier",
               "surfer", "skateboarder", "lady", "guy", "pedestrian"),
    "couch": ("sofa",), "tv": ("television", "monitor", "screen"), "motorcycle": ("motorbike",),
    "airplane": ("plane", "aircraft", "jet"), "bicycle": ("bike",), "laptop": ("computer",), "cup": ("mug",),
    "dog": ("puppy",), "cat": ("kitten",), "cell phone": ("smartphone", "mobile"),
}
# nouns wider than any dataset class: a caption that calls a dog "an animal" names no other class
GENERIC_NOUNS = ("animal", "object", "thing", "item", "vehicle", "furniture", "food", "plant", "person", "people",
                 "region", "area", "surface", "structure")
