"""What each parameter may hold: checked once, right after ``params.load`` merges the files.

Every command loads its params through ``params.load``, so a bad value stops it before any stage
runs, with every problem listed, one line each, naming the full key path::

    params: qa.evidence.action is 'flg'; allowed: fail, flag

The checks are declarative, one per key, and the schema mirrors ``defaults.yaml`` section by section.
Each stage declares the sections it owns beside its code (``Stage.param_types``, built from the checks
here, and ``Stage.check_params`` for rules across keys). This module holds the checks, the sections
no single stage owns (``RUN_LEVEL``) and the walk; ``schema()`` assembles the rest from the stages
when params are checked (never for ``--help``). Sections that hold backend options (``tag.haar:
{...}``) are found from their ``Backend`` checks and checked against the options the backend class
declares in ``defaults`` (read from the registry, never by instantiating a backend: that can load a
model). Stages may rely on these checks instead of repeating them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

from groundcap.errors import ParamsError
from groundcap.pipeline import order

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


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_num(value: Any) -> bool:
    """An int or float, neither a bool nor NaN."""
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
        if not is_int(value) or (self.low is not None and value < self.low) or \
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
        bad = not is_num(value)
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
    def __init__(self, nullable: bool = False, or_str: bool = False, allowed: tuple[str, ...] = ()) -> None:
        self.nullable, self.or_str, self.allowed = nullable, or_str, allowed

    def check(self, value, path, problems, params):
        if self.or_str and isinstance(value, str):
            return
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            want = "a string or a list of strings" if self.or_str else "a list of strings"
            _say(problems, path, value, f"expected {want}{self._null()}")
        elif self.allowed and not set(value) <= set(self.allowed):
            _say(problems, path, value, f"allowed in the list: {', '.join(self.allowed)}")


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
        from groundcap.releases import versions

        try:
            versions.parse(value if isinstance(value, str) else None)
        except ValueError:
            _say(problems, path, value, "expected a semantic version MAJOR.MINOR.PATCH in quotes (e.g. \"1.2.0\")")


def _backends(step: str) -> dict[str, Any]:
    from groundcap.annotators import registry

    return {info.name: info for info in registry.backends(step)}


class Backend(Check):
    """The name of a registered backend for ``step`` (a list of names when ``many``). Its options live in
    its section, under the backend's name (``tag.haar``), or in the section ``options_in`` names
    (``segment.crop_tagger`` is a tagger configured in ``tag``)."""

    def __init__(self, step: str, *, many: bool = False, nullable: bool = False, options_in: str | None = None) -> None:
        self.step, self.many, self.nullable, self.options_in = step, many, nullable, options_in

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
    """A mapping whose keys are ``keys`` (or any string key) and whose values pass ``values``.

    ``override`` says how a params file's mapping meets the default one: ``"merge"``, key by key, the
    file adding keys (``executor.ray.num_gpus``); ``"replace"``, stated whole (``split.fractions``: merged,
    a file's two fractions would keep the default's third); None, only the default's keys.
    """

    def __init__(self, values: Check, keys: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
                 nullable: bool = False, hint: str = "", override: Literal["merge", "replace"] | None = None) -> None:
        self.values, self.keys, self.nullable, self.hint, self.override = values, keys, nullable, hint, override

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


# The sections no single stage owns: where and how a run happens, what is released and its audit gate.
RUN_LEVEL: dict[str, Any] = {
    "source": Str(),
    "part_size": Int(1),
    "part_bytes": Int(1),
    "profile": StrList(nullable=True, or_str=True),
    "executor": {
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
            "num_gpus": Mapping_(Num(0), keys=lambda: tuple(sorted(order.NAMES)), hint="of stage to GPUs per actor",
                                 override="merge"),
            "local_cpus": Int(1, nullable=True),
        },
    },
    "audit": {
        "verdicts": Str(),
        "required": Bool(),
        "max_error_rate": Fraction(),
        "confidence": Num(0, 1, open_low=True, open_high=True),
        "sample_size": Int(1),
        "failed_share": Fraction(),
        "human_test_size": Int(1, nullable=True),
        "seed": Int(),
    },
    "release": {
        "name": Str(pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*", hint="a name of letters, digits, '.', '_' and '-'"),
        "pretty_name": Str(nullable=True),
        "version": Version(),
        "previous": Str(nullable=True),
        "redact": Enum("faces_and_plates", "none"),
        "images": Enum("embed", "reference"),
        "license": Str(nullable=True),
        "license_name": Str(nullable=True),
        "license_link": Str(nullable=True),
        "license_reason": Str(nullable=True),
        "annotations_license": Str(),
        "repo_id": Str(nullable=True, pattern=r"[^/\s]+/[^/\s]+", hint="ORG/NAME"),
        "sources": StrList(nullable=True, or_str=True),
    },
}


def schema(sections: Iterable[str] = ()) -> dict[str, Any]:
    """Every params section's checks: the run's (``RUN_LEVEL``) and each stage's own (``Stage.param_types``;
    this imports the stages), in the order of ``sections`` (the params checked: ``defaults.yaml``'s order, the
    order its reader meets the problems listed), then any other."""
    out = dict(RUN_LEVEL)
    for stage in order.stages():
        for section, types in stage.param_types.items():
            if section in out:
                raise RuntimeError(f"stage {stage.name} declares the types of the params section {section!r}, "
                                   "which another stage or the run already declares")
            out[section] = types
    place = {section: i for i, section in enumerate(sections)}
    return dict(sorted(out.items(), key=lambda item: place.get(item[0], len(place))))


Selector = tuple[str, str, str]  # (section, key, step) of a Backend check


def _option_sections(types: Mapping[str, Any]) -> dict[str, list[Selector]]:
    """Sections whose other keys are backend option sections (``tag.haar: {...}``) -> the Backend checks
    whose backends take their options there: the section's own first, then those declared ``options_in`` it."""
    out: dict[str, list[Selector]] = {}
    for section, rules in types.items():
        for key, rule in rules.items() if isinstance(rules, dict) else ():
            if isinstance(rule, Backend):
                out.setdefault(rule.options_in or section, []).append((section, key, rule.step))
    return {name: sorted(found, key=lambda s: s[0] != name) for name, found in out.items()}


def _rules(types: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Check]]:
    for key, rule in types.items():
        if isinstance(rule, dict):
            yield from _rules(rule, (*path, key))
        else:
            yield (*path, key), rule


def merge_rules() -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    """How a params file's mappings meet the defaults (``params.load``): ``(open, replaced)``, the paths where
    an override may add keys (backend option sections, whose other keys name backends; mappings declared
    ``override="merge"``) and those an override replaces whole (``override="replace"``)."""
    types = schema()
    open_paths = {(section,) for section in _option_sections(types)}
    replaced = set()
    for path, rule in _rules(types, ()):
        if isinstance(rule, Mapping_) and rule.override:
            (open_paths if rule.override == "merge" else replaced).add(path)
    return open_paths, replaced


def _walk(schema: Mapping[str, Any], values: Any, path: str, problems: Problems, params: Mapping,
          options: dict[str, list[Selector]]) -> None:
    if not isinstance(values, dict):
        _say(problems, path, values, f"expected a mapping of {', '.join(schema)}")
        return
    for key, rule in schema.items():
        here = f"{path}.{key}" if path else key
        if key not in values:
            problems.append(f"params: {here} is missing")
        elif isinstance(rule, dict):
            _walk(rule, values[key], here, problems, params, options)
        else:
            rule(values[key], here, problems, params)
    if path in options:
        _backend_options(path, schema, values, options[path], problems, params)
    else:
        for key in values.keys() - schema.keys():
            # params.load refuses unknown keys already; this catches dicts built by hand
            problems.append(f"params: unknown parameter '{path + '.' if path else ''}{key}'; "
                            f"known keys here: {', '.join(schema)}")


def _selected(selectors: list[Selector], params: Mapping) -> dict[str, list[str]]:
    """Backend name -> the steps it is selected for, among ``selectors``."""
    out: dict[str, list[str]] = {}
    for section, key, step in selectors:
        values = params.get(section)
        chosen = values.get(key) if isinstance(values, dict) else None
        for name in chosen if isinstance(chosen, list) else [chosen]:
            if isinstance(name, str):
                out.setdefault(name, []).append(step)
    return out


def _backend_options(section: str, types: Mapping[str, Any], values: dict, selectors: list[Selector],
                     problems: Problems, params: Mapping) -> None:
    steps = tuple(dict.fromkeys(step for _, _, step in selectors))
    selected = _selected(selectors, params)
    for name in sorted(values.keys() - types.keys()):
        path = f"{section}.{name}"
        infos = [info for step in steps if (info := _backends(step).get(name)) is not None]
        if not infos:
            names = sorted({n for step in steps for n in _backends(step)})
            problems.append(f"params: unknown parameter '{path}': neither a {section} setting "
                            f"({', '.join(types)}) nor the options of a {' or '.join(steps)} "
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
        ok = is_int(value) or (is_num(value) and float(value).is_integer())
        want = "an integer"
    elif isinstance(default, float):
        ok, want = is_num(value), "a number"
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


def check(params: Mapping[str, Any]) -> None:
    """Raise one :class:`ParamsError` listing every problem in ``params`` (merged defaults and overrides):
    each key against its type, then each stage's checks across keys (``Stage.check_params``)."""
    problems: Problems = []
    types = schema(params if isinstance(params, Mapping) else ())
    _walk(types, params, "", problems, params, _option_sections(types))
    for stage in order.stages():
        stage.check_params(params, problems)
    if problems:
        raise ParamsError("\n".join(problems))
