"""Text that came from data, made safe to put in the card's Markdown: shown as the characters it holds.

Labels, QA reasons (which quote captions, OCR text and a judge model's answers) and source names come
from images and models nobody vetted, and the Hub renders the card as GitHub-flavoured Markdown with
inline HTML. :func:`literal` backslash-escapes every ASCII punctuation character (CommonMark renders ``\\``
followed by any ASCII punctuation as that character, in table cells too, where ``\\|`` is GFM's escaped
pipe), so no tag, entity, link, image, emphasis, code span or table cell can start in data, nor any
autolink: those need an unescaped ``:`` (schemes), ``.`` (``www.``, bare domains) or ``//``. GitHub's
cmark-gfm finds e-mail addresses in the text after unescaping, so an ``@`` is also followed by an
invisible WORD JOINER (U+2060), which no address may hold.
Only ``_`` between two letters or digits stays as it is (it can never open or close emphasis there), so
``min_area`` reads the same; text of letters, digits and spaces is unchanged, and so is the demo's card.
Line breaks and other control characters become spaces: data never starts a line of its own.
"""

from __future__ import annotations

import re
import string
import unicodedata

_PUNCTUATION = re.compile("[" + re.escape(string.punctuation) + "]")
_BREAKS = frozenset({"Cc", "Zl", "Zp"})  # control characters, line and paragraph separators


class Markdown(str):
    """Markdown the card composed itself (escaped data, its own markup): table cells take it as it is."""


def _escape(match: re.Match) -> str:
    char, text, at = match.group(), match.string, match.start()
    if char == "_" and 0 < at < len(text) - 1 and text[at - 1].isalnum() and text[at + 1].isalnum():
        return char
    return "\\@\u2060" if char == "@" else "\\" + char


def literal(text: object) -> Markdown:
    """``text`` as Markdown that renders as its characters on one line (an ``@`` then a word joiner), never as
    markup."""
    flat = "".join(" " if unicodedata.category(c) in _BREAKS else c for c in str(text)).strip()
    return Markdown(_PUNCTUATION.sub(_escape, flat))

