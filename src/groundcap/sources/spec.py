"""``source:`` strings of the annotated and packed kinds: ``kind:target?key=value&key=value``."""

from __future__ import annotations

from urllib.parse import parse_qsl

from groundcap.errors import SourceError


def split_options(source: str, target: str, allowed: dict[str, str | None]) -> tuple[str, dict[str, str | None]]:
    """``target`` without its ``?options``, and the options over ``allowed`` (name -> default).

    An option outside ``allowed`` is an error that lists the allowed ones, so a typo never runs
    silently with a default."""
    path, _, query = target.partition("?")
    options = dict(allowed)
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in allowed:
            raise SourceError(f"source {source!r}: unknown option {key!r}; options: {', '.join(sorted(allowed))}")
        options[key] = value
    if not path:
        raise SourceError(f"source {source!r} names no path")
    return path, options
