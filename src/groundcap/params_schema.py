"""What each parameter may hold: checked once, right after ``params.load`` merges the files.

Every command loads its params through ``params.load``, so a bad value stops it before any stage
runs, with every problem listed, one line each, naming the full key path::

    params: qa.evidence.action is 'flg'; allowed: fail, flag

The schema is declarative: ``SCHEMA`` mirrors ``defaults.yaml`` section by section, one check per
key. Sections that hold backend options (``tag.haar: {...}``) are checked against the options the
backend class declares in ``defaults`` (read from the registry, never by instantiating a backend:
that can load a model). Stages may rely on these checks instead of repeating them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from groundcap.errors import ParamsError

Problems = list[str]


def _show(value: Any) -> str:
    kind = {bool: "a boolean", list: "a list", dict: "a mapping", str: "a string", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value))
    if value is None:
        return "null"
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{shown} ({kind})" if kind in ("a list", "a mapping", "a boolean") else shown


def _say(problems: Problems, path: str, value: Any, expected: str) -> None:
    problems.append(f"params: {path} is {_show(value)}; {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and not (isinstance(value, float) and math.isnan(value)))


class Check:
    """One key's rule: ``check`` appends a line per problem to ``problems``."""

    nullable = False

    def __call__(self, value: Any, path: str, problems: Problems, params: Mapping) -> None:
        if value is None and self.nullable:
            return
        self.check(value, path, problems, params)

    def check(self, value: Any, path: str, problems: Problems, params: Mapping) -> None:  # pragma: no cover
        raise NotImplementedError

    def _null(self) -> str:
        return " or null" if self.nullable else ""


class Int(Check):
    def __init__(self, low: int | None = None, high: int | None = None, nullable: bool = False) -> None:
        self.low, self.high, self.nullable = low, high, nullable

    def check(self, value, path, problems, params):
        if not _is_int(value) or (self.low is not None and value < self.low) or \
                (self.high is not None and value > self.high):
            if self.low is not None and self.high is not None:
                want = f"an integer within {self.low}..{self.high}"
            elif self.low is not None:
                want = f"an integer >= {self.low}"
            else:
                want = "an integer"
            _say(problems, path, value, f"expected {want}{self._null()}")


class Num(Check):
    """A number (int or float, never a bool) in a range; ``open_low`` excludes ``low`` itself."""

    def __init__(self, low: float | None = None, high: float | None = None, *, open_low: bool = False,
                 open_high: bool = False, nullable: bool = False) -> None:
        self.low, self.high, self.open_low, self.open_high, self.nullable = low, high, open_low, open_high, nullable

    def check(self, value, path, problems, params):
        bad = not _is_num(value)
        if not bad and self.low is not None:
            bad = value <= self.low if self.open_low else value < self.low
        if not bad and self.high is not None:
            bad = value >= self.high if self.open_high else value > self.high
        if bad:
            if self.low is not None and self.high is not None:
                want = f"a number in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}" \
                       f"{')' if self.open_high else ']'}"
            elif self.low is not None:
                want = f"a number {'>' if self.open_low else '>='} {self.low:g}"
            else:
                want = "a number"
            _say(problems, path, value, f"expected {want}{self._null()}")


def Fraction(nullable: bool = False) -> Num:
    """A threshold or share in [0, 1]."""
    return Num(0, 1, nullable=nullable)


class Bool(Check):
    def check(self, value, path, problems, params):
        if not isinstance(value, bool):
            _say(problems, path, value, "expected true or false")


class Str(Check):
    def __init__(self, nullable: bool = False, pattern: str | None = None, hint: str = "") -> None:
        self.nullable, self.pattern, self.hint = nullable, pattern, hint

    def check(self, value, path, problems, params):
        if not isinstance(value, str) or not value.strip() or \
                (self.pattern is not None and not re.fullmatch(self.pattern, value)):
            _say(problems, path, value, f"expected {self.hint or 'a non-empty string'}{self._null()}")


class Enum(Check):
    def __init__(self, *allowed: str | Callable[[], tuple[str, ...]], nullable: bool = False) -> None:
        self._allowed, self.nullable = allowed, nullable

    @property
    def allowed(self) -> tuple[str, ...]:
        if len(self._allowed) == 1 and callable(self._allowed[0]):
            return tuple(self._allowed[0]())
        return tuple(self._allowed)

    def check(self, value, path, problems, params):
        allowed = self.allowed
        if not isinstance(value, str) or value not in allowed:
            _say(problems, path, value, f"allowed: {', '.join(allowed)}{self._null()}")


class StrList(Check):
    def __init__(self, nullable: bool = False, or_str: bool = False) -> None:
        self.nullable, self.or_str = nullable, or_str

    def check(self, value, path, problems, params):
        if self.or_str and isinstance(value, str):
            return
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            want = "a string or a list of strings" if self.or_str else "a list of strings"
            _say(problems, path, value, f"expected {want}{self._null()}")


class Protocols(Check):
    """fsspec protocol names, lower case (``file`` for local paths)."""

    def check(self, value, path, problems, params):
        if not isinstance(value, list) or not all(isinstance(v, str) and re.fullmatch(r"[a-z][a-z0-9+.-]*", v)
                                                  for v in value):
            _say(problems, path, value, "expected a list of lower-case protocol names, e.g. [file, http, https, s3]")


class Regex(Check):
    nullable = True

    def check(self, value, path, problems, params):
        if not isinstance(value, str):
            _say(problems, path, value, "expected a regular expression (a string) or null")
            return
        try:
            re.compile(value)
        except re.error as exc:
            _say(problems, path, value, f"expected a regular expression: {exc}")


class Version(Check):
    def check(self, value, path, problems, params):
        from groundcap import versions

        try:
            versions.parse(value if isinstance(value, str) else None)
        except ValueError:
            _say(problems, path, value, "expected a semantic version MAJOR.MINOR.PATCH in quotes (e.g. \"1.2.0\")")


def _backends(step: str) -> dict[str, Any]:
    from groundcap.annotators import registry

    return {info.name: info for info in registry.backends(step)}


class Backend(Check):
    """The name of a registered backend for ``step`` (a list of names when ``many``)."""

    def __init__(self, step: str, *, many: bool = False, nullable: bool = False) -> None:
        self.step, self.many, self.nullable = step, many, nullable

    def check(self, value, path, problems, params):
        known = _backends(self.step)
        names = value if self.many else [value]
        if self.many and (not isinstance(value, list)):
            _say(problems, path, value, f"expected a list of {self.step} backends from: {', '.join(known)}")
            return
        for name in names:
            if not isinstance(name, str) or name not in known:
                shown = f"{path} names {name!r}" if self.many else None
                where = f"{self.step} backends: {', '.join(known)}{self._null()}"
                if shown:
                    problems.append(f"params: {shown}, not a registered {self.step} backend; {where}")
                else:
                    _say(problems, path, value, f"not a registered {self.step} backend; {where}")


class Mapping_(Check):
    """A mapping whose keys are ``keys`` (or any string key) and whose values pass ``values``."""

    def __init__(self, values: Check, keys: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
                 nullable: bool = False, hint: str = "") -> None:
        self.values, self.keys, self.nullable, self.hint = values, keys, nullable, hint

    def check(self, value, path, problems, params):
        if not isinstance(value, dict):
            _say(problems, path, value, f"expected a mapping{' ' + self.hint if self.hint else ''}{self._null()}")
            return
        keys = self.keys() if callable(self.keys) else self.keys
        for key, item in value.items():
            if keys is not None and key not in keys:
                problems.append(f"params: {path} names {key!r}; allowed: {', '.join(keys)}")
                continue
            self.values(item, f"{path}.{key}", problems, params)


def _stage_names() -> tuple[str, ...]:
    from groundcap.stages import stage_names

    return tuple(sorted(stage_names()))


def _embedders() -> tuple[str, ...]:
    from groundcap.qa.consistency import MODELS

    return tuple(sorted(MODELS))


def _split_names() -> tuple[str, ...]:
    from groundcap.splits import SPLITS

    return SPLITS


def _held_out() -> tuple[str, ...]:
    from groundcap.splits import HELD_OUT

    return HELD_OUT


# Sections whose other keys are backend option sections: section -> {selector key: step}.
# segment.crop_tagger is a tagger whose options live in `tag`.
BACKEND_SECTIONS: dict[str, dict[str, str]] = {
    "tag": {"taggers": "tagger", "detectors": "detector"},
    "segment": {"prompted": "prompted_segmenter", "everything": "mask_generator"},
    "caption_regions": {"captioner": "region_captioner", "verifier": "verifier"},
    "caption_scene": {"composer": "scene_captioner"},
    "crosscheck": {"captioner": "region_captioner", "scene_composer": "scene_captioner", "judge": "verifier"},
    "redact": {"detectors": "detector"},
}

SCHEMA: dict[str, Any] = {
    "source": Str(),
    "part_size": Int(1),
    "profile": StrList(nullable=True, or_str=True),
    "engine": {
        "kind": Enum("local", "ray"),
        "workers": Int(1),
        "max_attempts": Int(1),
        "batch_images": Int(0),
        "build_workers": Int(1),
        "require_gpu": Bool(),
        "ray": {
            "address": Str(nullable=True),
            "actors": Int(1),
            "num_cpus": Num(0),
            "num_gpus": Mapping_(Num(0), keys=_stage_names, hint="of stage to GPUs per actor"),
            "local_cpus": Int(1, nullable=True),
        },
    },
    "ingest": {
        "min_side": Int(1),
        "max_pixels": Int(1),
        "max_bytes": Int(1),
        "animated": Enum("first_frame", "reject"),
        "source_policy": {
            "protocols": Protocols(),
            "follow_links": Bool(),
            "file_timeout_s": Num(0, open_low=True),
            "connect_timeout_s": Num(0, open_low=True),
            "read_timeout_s": Num(0, open_low=True),
            "decode_timeout_s": Num(0, open_low=True),
            "workers": Int(1, 64),
        },
    },
    "tag": {
        "taggers": Backend("tagger", many=True),
        "detectors": Backend("detector", many=True),
        "merge_iou": Fraction(),
    },
    "segment": {
        "work_side": Int(1),
        "prompted": Backend("prompted_segmenter"),
        "everything": Backend("mask_generator"),
        "min_area_frac": Fraction(),
        "nms_iou": Fraction(),
        "max_regions": Int(1),
        "min_predicted_iou": Fraction(),
        "min_stability": Fraction(),
        "max_parts": Int(0),
        "part_min_containment": Fraction(),
        "crop_tagger": Backend("tagger", nullable=True),
        "crop_tag_min_score": Fraction(),
        "generic_labels": StrList(),
        "given": Enum("use", "merge", "ignore"),
    },
    "caption_regions": {
        "captioner": Backend("region_captioner"),
        "verifier": Backend("verifier", nullable=True),
        "unique_rounds": Int(0),
        "unique_max_similarity": Fraction(),
    },
    "caption_scene": {
        "composer": Backend("scene_captioner"),
        "max_regions": Int(1),
        "divide_above": Int(0),
    },
    "crosscheck": {
        "captioner": Backend("region_captioner", nullable=True),
        "scene_composer": Backend("scene_captioner", nullable=True),
        "judge": Backend("verifier", nullable=True),
        "embedder": Enum(_embedders),
    },
    "qa": {
        "min_region_area_frac": Fraction(),
        "min_regions": Int(0),
        "require_unique_captions": Bool(),
        "evidence": {
            "action": Enum("fail", "flag"),
            "min_color_share": Fraction(),
            "share_tolerance": Fraction(),
            "min_text_similarity": Fraction(),
        },
        "consistency": {
            "action": Enum("fail", "flag"),
            "min_similarity": Num(-1, 1),  # a cosine
            "min_claim_agreement": Fraction(),
            "min_scene_similarity": Num(-1, 1),
        },
    },
    "dedup": {
        "phash_max_distance": Int(0, 32),  # bits of 64
        "keep": Enum("one", "all"),
        "caption_min_jaccard": Num(0, 1, open_low=True),
        "caption_keep": Enum("one", "all"),
    },
    "audit": {
        "verdicts": Str(),
        "required": Bool(),
        "max_error_rate": Fraction(),
        "confidence": Num(0, 1, open_low=True, open_high=True),
        "sample_size": Int(1),
        "seed": Int(),
    },
    "split": {
        "seed": Int(),
        "fractions": Mapping_(Num(0, 1), keys=_split_names, nullable=True, hint="of split to fraction"),
        "sizes": Mapping_(Int(0), keys=_held_out, nullable=True, hint="of split to image count"),
        "group_pattern": Regex(),
    },
    "redact": {
        "detectors": Backend("detector", many=True),
        "pad_frac": Num(0, 1),
        "cells": Int(1),
    },
    "build": {
        "shard_bytes": Int(1),
        "wds_shard_bytes": Int(1),
        "row_group_rows": Int(1),
        "row_group_bytes": Int(1),
        "pancap_text": Bool(),
    },
    "release": {
        "name": Str(pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*", hint="a name of letters, digits, '.', '_' and '-'"),
        "pretty_name": Str(nullable=True),
        "version": Version(),
        "previous": Str(nullable=True),
        "redact": Enum("faces_and_plates", "none"),
        "license": Str(),
        "license_name": Str(nullable=True),
        "license_link": Str(nullable=True),
        "repo_id": Str(nullable=True, pattern=r"[^/\s]+/[^/\s]+", hint="ORG/NAME"),
        "sources": StrList(nullable=True, or_str=True),
    },
}


def _walk(schema: Mapping[str, Any], values: Any, path: str, problems: Problems, params: Mapping) -> None:
    if not isinstance(values, dict):
        _say(problems, path, values, f"expected a mapping of {', '.join(schema)}")
        return
    for key, rule in schema.items():
        here = f"{path}.{key}" if path else key
        if key not in values:
            problems.append(f"params: {here} is missing")
        elif isinstance(rule, dict):
            _walk(rule, values[key], here, problems, params)
        else:
            rule(values[key], here, problems, params)
    if path in BACKEND_SECTIONS:
        _backend_options(path, values, problems, params)
    else:
        for key in values.keys() - schema.keys():
            # params.load refuses unknown keys already; this catches dicts built by hand
            problems.append(f"params: unknown parameter '{path + '.' if path else ''}{key}'; "
                            f"known keys here: {', '.join(schema)}")


def _selected(section: str, params: Mapping) -> dict[str, list[str]]:
    """Backend name -> the steps it is selected for whose options come from ``params[section]``."""
    out: dict[str, list[str]] = {}
    values = params.get(section) or {}
    for key, step in BACKEND_SECTIONS[section].items():
        chosen = values.get(key)
        for name in chosen if isinstance(chosen, list) else [chosen]:
            if isinstance(name, str):
                out.setdefault(name, []).append(step)
    crop = (params.get("segment") or {}).get("crop_tagger") if section == "tag" else None
    if isinstance(crop, str):
        out.setdefault(crop, []).append("tagger")
    return out


def _backend_options(section: str, values: dict, problems: Problems, params: Mapping) -> None:
    steps = tuple(dict.fromkeys(BACKEND_SECTIONS[section].values()))
    selected = _selected(section, params)
    for name in sorted(values.keys() - SCHEMA[section].keys()):
        path = f"{section}.{name}"
        infos = [info for step in steps if (info := _backends(step).get(name)) is not None]
        if not infos:
            names = sorted({n for step in steps for n in _backends(step)})
            problems.append(f"params: unknown parameter '{path}': neither a {section} setting "
                            f"({', '.join(SCHEMA[section])}) nor the options of a {' or '.join(steps)} "
                            f"backend ({', '.join(names)})")
            continue
        options = values[name]
        if options is None:
            continue
        if not isinstance(options, dict):
            _say(problems, path, options, f"expected a mapping of the {name} backend's options")
            continue
        # the classes that will receive these options: those selected, else any of that name
        receiving = [i for i in infos if i.step in selected.get(name, ())] or infos
        for key, value in options.items():
            holders = [i for i in receiving if key in i.cls.defaults]
            if len(holders) < (len(receiving) if name in selected else 1):
                known = sorted(set().union(*(i.cls.defaults for i in receiving)))
                problems.append(f"params: {path}.{key} is not an option of the {name} backend; "
                                f"its options: {', '.join(known) or '(none)'}")
                continue
            for info in holders[:1]:
                _option_type(info.cls.defaults[key], value, f"{path}.{key}", problems)


def _option_type(default: Any, value: Any, path: str, problems: Problems) -> None:
    """``value`` must be of ``default``'s type (an integral float counts as an int: it is coerced)."""
    if default is None:
        return
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok = _is_int(value) or (_is_num(value) and float(value).is_integer())
        want = "an integer"
    elif isinstance(default, float):
        ok, want = _is_num(value), "a number"
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    elif isinstance(default, (list, tuple)):
        ok, want = isinstance(value, (list, tuple)), "a list"
    elif isinstance(default, dict):
        ok, want = isinstance(value, dict), "a mapping"
    else:
        return
    if not ok:
        _say(problems, path, value, f"expected {want} (like its default {default!r})")


def _split_targets(params: Mapping, problems: Problems) -> None:
    section = params.get("split")
    if not isinstance(section, dict):
        return
    fractions, sizes = section.get("fractions"), section.get("sizes")
    if (fractions is None) == (sizes is None):
        problems.append("params: split.fractions and split.sizes are both "
                        f"{'null' if fractions is None else 'set'}; set exactly one of them (the other to null)")
    if isinstance(fractions, dict) and all(_is_num(v) for v in fractions.values()):
        total = sum(fractions.values())
        if abs(total - 1) > 1e-6:
            problems.append(f"params: split.fractions sum to {total:g}; they must sum to 1")


def _redact_detectors(params: Mapping, problems: Problems) -> None:
    release, section = params.get("release"), params.get("redact")
    if isinstance(release, dict) and isinstance(section, dict) and release.get("redact") not in (None, "none") \
            and section.get("detectors") == []:
        problems.append(f"params: release.redact is {release['redact']!r} but redact.detectors is empty; name a "
                        "detector (e.g. [haar]) or set release.redact: none")


def check(params: Mapping[str, Any]) -> None:
    """Raise one :class:`ParamsError` listing every problem in ``params`` (merged defaults and overrides)."""
    problems: Problems = []
    _walk(SCHEMA, params, "", problems, params)
    _split_targets(params, problems)
    _redact_detectors(params, problems)
    if problems:
        raise ParamsError("\n".join(problems))
