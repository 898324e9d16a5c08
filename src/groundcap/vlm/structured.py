"""JSON answers from model text: lenient parsing, validation, and bounded re-asking.

VLMs wrap JSON in fences and prose, leave trailing commas, answer in Python literals and get cut
off at ``max_tokens``. ``parse_json`` repairs what it can without guessing at content; ``ask``
re-sends only the requests whose reply still fails, so a batch of thousands costs a few extra
calls, not a rerun, and what never parses becomes a recorded reason instead of an exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from groundcap.vlm.chat import ChatEngine, ChatReply, ChatRequest


class MalformedReply(ValueError):
    """The reply holds no usable JSON; the message says why, briefly."""


class _Broken(Exception):
    """Repair failed at ``at``; JSON-looking text before that point was not the answer."""

    def __init__(self, reason: str, at: int) -> None:
        super().__init__(reason)
        self.at = at


_FENCE = re.compile(r"^[ \t]*```[\w-]*[ \t]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
_NUMBER = re.compile(r"-?\d*(?:\.\d*)?(?:[eE][+-]?\d*)?")
_WORD = re.compile(r"[A-Za-z_]\w*")
_AFTER_STRING = re.compile(r"\s*(?:[,:}\]]|\Z)")
_LITERALS = {"true": "true", "false": "false", "null": "null", "True": "true", "False": "false", "None": "null"}
_CLOSE = {"{": "}", "[": "]"}
_OPEN = {"}": "{", "]": "["}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"', "'": "'"}
_DECODER = json.JSONDecoder()


def parse_json(text: str) -> Any:
    """The JSON object or array in a model reply, repaired where the breakage is unambiguous.

    Repairs: ```json fences and prose around the value, trailing commas, single-quoted strings,
    Python ``True``/``False``/``None``, raw newlines in strings, a closer the model forgot, and a
    reply cut off mid-way (the open string is closed, a dangling key or partial number dropped,
    open brackets closed). Raises ``MalformedReply`` when nothing usable remains.
    """
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    first: _Broken | None = None
    resume = 0
    for start in (i for i, c in enumerate(body) if c in "{["):
        if start < resume:  # inside text an earlier attempt consumed before failing
            continue
        try:
            return _DECODER.raw_decode(body, start)[0]
        except ValueError:
            pass
        try:
            return _repair(body, start)
        except _Broken as exc:  # maybe prose like "[see below]" came first: try the next bracket
            first, resume = first or exc, exc.at + 1
    raise MalformedReply(str(first) if first else "no JSON object or array in the reply")


def _repair(text: str, start: int) -> Any:
    """Re-tokenise from ``start`` into strict JSON tokens, fixing what ``parse_json`` lists."""
    out: list[str] = []
    stack: list[str] = []
    i = start
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "{[":
            stack.append(c)
            out.append(c)
            i += 1
        elif c in "}]":
            if _OPEN[c] not in stack:
                raise _Broken(f"unmatched {c!r} at {i}", i)
            while stack:  # also close what the model forgot to close before this
                opener = stack.pop()
                if out[-1] == ",":
                    out.pop()
                out.append(_CLOSE[opener])
                if opener == _OPEN[c]:
                    break
            i += 1
            if not stack:
                return _load(out, i)
        elif c in ",:":
            out.append(c)
            i += 1
        elif c in "\"'":
            value, i = _string(text, i)
            out.append(json.dumps(value))
        else:
            match = (_NUMBER if c in "-0123456789" else _WORD).match(text, i)
            if not match or not match.group():
                raise _Broken(f"unexpected {c!r} at {i}", i)
            token, i = match.group(), match.end()
            if i == len(text) and token not in _LITERALS:
                break  # cut off inside a number or word: drop the partial value
            if token[0] not in "-0123456789":
                if token not in _LITERALS:
                    raise _Broken(f"unexpected {token!r} at {match.start()}", match.start())
                token = _LITERALS[token]
            out.append(token)
    # the reply ended inside the value: drop a dangling comma, key or "key":, then close brackets
    while out[-1] in (",", ":") or (stack[-1] == "{" and out[-1][0] == '"' and out[-2] in ("{", ",")):
        if out.pop() == ":":
            out.pop()
    value = _load(out + [_CLOSE[opener] for opener in reversed(stack)], len(text))
    if not value:
        raise _Broken("cut off before any value", len(text))
    return value


def _string(text: str, i: int) -> tuple[str, int]:
    """The string starting at quote ``text[i]`` and the index after it. A quote closes the string
    only when a delimiter follows, so inner apostrophes and unescaped quotes survive; a string the
    reply cut off is closed at the end of the text."""
    quote, i, chars = text[i], i + 1, []
    while i < len(text):
        c = text[i]
        if c == "\\":
            code = text[i + 2 : i + 6]
            if text[i + 1 : i + 2] == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", code):
                chars.append(chr(int(code, 16)))
                i += 6
            else:
                nxt = text[i + 1 : i + 2]
                chars.append(_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
        elif c == quote and _AFTER_STRING.match(text, i + 1):
            return "".join(chars), i + 1
        else:
            chars.append(c)
            i += 1
    return "".join(chars), i


def _load(tokens: list[str], at: int) -> Any:
    try:
        return json.loads("".join(tokens))
    except ValueError as exc:
        raise _Broken(f"unrepairable JSON ({exc.msg})", at) from None


def require(obj: Any, **types: type | tuple[type, ...]) -> dict[str, Any]:
    """``obj`` if it is a JSON object holding each key with a value of its type, else a ValueError
    naming the key. ``float`` admits ints (JSON writes 1.0 as 1); booleans pass only as ``bool``."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    for key, kinds in types.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if key not in obj:
            raise ValueError(f"missing key {key!r}")
        value = obj[key]
        accepted = (*kinds, int) if float in kinds else kinds
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(kind.__name__ for kind in kinds)
            raise ValueError(f"key {key!r} should be {names}, got {type(value).__name__}")
    return obj


@dataclass(frozen=True)
class Answer:
    """A validated value, or ``error`` ("<reason> after N attempts") when every attempt failed."""

    value: Any = None
    attempts: int = 0
    error: str | None = None
    truncated: bool = False  # the accepted reply was cut off at max_tokens and repaired

    @property
    def ok(self) -> bool:
        return self.error is None


def ask(
    engine: ChatEngine,
    requests: Sequence[ChatRequest],
    validate: Callable[[Any], Any] | Sequence[Callable[[Any], Any]],
    max_attempts: int = 3,
    temperature_step: float = 0.4,
) -> list[Answer]:
    """One ``Answer`` per request, in order: the reply parsed by ``parse_json`` and cleaned by
    ``validate`` (which raises ValueError with a reason; a list gives one validator per request,
    for a batch that mixes several images' requests). Failed requests, and only those, are
    re-sent together, up to ``max_attempts`` sends in all. A request whose reply arrived but did
    not parse or validate is re-sent ``temperature_step`` hotter: a seeded engine would otherwise
    repeat the same bad answer word for word.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    current = list(requests)
    validators = list(validate) if isinstance(validate, Sequence) else [validate] * len(current)
    answers: dict[int, Answer] = {}
    reasons: dict[int, str] = {}
    pending = list(range(len(requests)))
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        replies = engine.generate([current[i] for i in pending])
        failed = []
        for i, reply in zip(pending, replies, strict=True):
            try:
                answers[i] = Answer(_accept(reply, validators[i]), attempt, truncated=reply.truncated)
            except ValueError as exc:
                reasons[i] = str(exc)
                failed.append(i)
                if reply.ok:
                    current[i] = replace(current[i], temperature=current[i].temperature + temperature_step)
        pending = failed
    for i in pending:
        answers[i] = Answer(None, max_attempts, f"{reasons[i]} after {max_attempts} attempts")
    return [answers[i] for i in range(len(requests))]


def _accept(reply: ChatReply, validate: Callable[[Any], Any]) -> Any:
    if not reply.ok:
        raise ValueError(reply.error)
    try:
        value = parse_json(reply.text)
    except MalformedReply as exc:
        raise MalformedReply(f"truncated reply: {exc}" if reply.truncated else str(exc)) from None
    return validate(value)
