"""The dataset card shows text from data (labels, QA reasons, source names) as text: never as HTML, links or images.

The card is rendered as the Hub and GitHub render it: with markdown-it-py in its GFM-like mode (tables,
strikethrough, linkify of bare URLs and domains) and with cmarkgfm, GitHub's own cmark-gfm (its
autolink extension, inline HTML let through). A release whose data holds hostile labels must render
exactly the tags, links and images a release with clean labels renders, and still validate and be
checksummed (a Markdown image in a label used to fail ``validate_card``, so the card stage stopped
before ``checksums.json``).
"""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from huggingface_hub import DatasetCard
from markdown_it import MarkdownIt

from groundcap.builders import verify_manifest
from groundcap.dataset_card import validate_card
from groundcap.dataset_card.escape import literal
from test_builders import PARAMS, QA, _record, build

HOSTILE_LABELS = [
    "<img src=x onerror=alert(1)>",
    "[link](javascript:alert(1))",
    "![x](http://e/x.png)",
    "``code`` and `tick`",
    "a | b || c",
    "<script>alert(1)</script>",
    "**bold** _em_ ~~gone~~",
    "https://evil.example/x?token=1 www.evil.com",
    "mail me@evil.com or mailto:me@evil.com",
    "&lt;b&gt; &amp; &#x3C;",
]
HOSTILE_LABELS_2 = [
    "line\nbreak\r\n# heading",
    "- [ ] task",
    "<https://evil.example>",
    "evil.com //evil.com/x",
    "trailing backslash \\",
    "$x$ and <!-- comment -->",
    "[ref]: http://evil.example",
    "<a href='http://e'>a</a>",
    "| --- |",
    "\\<img src=y onerror=alert(2)\\>",
]
HOSTILE_REASONS = {
    "region_failure_reasons": {"evidence: 'the <b>red</b> car' vs ![y](http://e/y.png)": 2, "too_few_regions": 1},
    "flags": {"judge rejected: see [here](http://evil.example) <iframe src=//e>": 1},
}
HOSTILE_SOURCES = ["[click](javascript:alert(1))", "<b>bold</b> http://evil.example/a.png"]
GFM = Options.CMARK_OPT_UNSAFE  # let raw HTML through, as the renderer before a sanitizer sees it


def _records(first: list[str], second: list[str]) -> dict:
    return {"train": [_record(1, 64, 48, "PNG", first[:5]), _record(2, 64, 48, "PNG", first[5:])],
            "validation": [_record(4, 64, 48, "PNG", second)], "test": []}


def _card(tmp_path, name, labels, labels_2, qa, sources) -> str:
    params = copy.deepcopy(PARAMS)
    params["release"]["sources"] = sources
    release = build(tmp_path / name, params, _records(labels, labels_2), qa)  # raises if the card is invalid
    assert verify_manifest(release) == []  # checksums.json written after the card, covering it
    assert validate_card(release / "README.md") == []
    text = (release / "README.md").read_text(encoding="utf-8")
    assert DatasetCard(text).data.to_dict()["pretty_name"] == params["release"]["pretty_name"]  # front matter intact
    return text


@pytest.fixture(scope="module")
def cards(tmp_path_factory) -> tuple[str, str]:
    """(hostile, clean): the same release shape, with hostile and with plain-word labels, reasons and sources."""
    tmp = tmp_path_factory.mktemp("cards")
    hostile = _card(tmp, "hostile", HOSTILE_LABELS, HOSTILE_LABELS_2, QA | HOSTILE_REASONS, HOSTILE_SOURCES)
    clean_reasons = {"region_failure_reasons": {"caption fits other regions too": 2, "too_few_regions": 1},
                     "flags": {"judge rejected": 1}}
    clean = _card(tmp, "clean", [f"label {i}" for i in range(10)], [f"other {i}" for i in range(10)],
                  QA | clean_reasons, ["bundled images", "public domain"])
    return hostile, clean


def _body(card: str) -> str:
    return card.split("\n---\n", 1)[1]


def _markdown_it_markup(body: str) -> list[tuple]:
    """Every HTML, link and image token markdown-it (GFM-like, linkify on) makes of ``body``, with its attributes."""
    md = MarkdownIt("gfm-like")
    found = []
    for token in md.parse(body):
        for t in [token, *(token.children or [])]:
            if t.type in ("html_block", "html_inline", "link_open", "image") or t.type.startswith("html"):
                found.append((t.type, tuple(sorted(t.attrs.items())), t.content if t.type != "image" else ""))
    return found


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag not in ("p", "h1", "h2", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "pre", "code",
                       "strong"):
            self.tags.append((tag, tuple(attrs)))

    def handle_comment(self, data) -> None:
        self.tags.append(("!--", data))


def _github_markup(body: str) -> list[tuple]:
    """Every tag GitHub's cmark-gfm renders ``body`` to, but the block structure the card itself uses."""
    parser = _Tags()
    parser.feed(cmarkgfm.github_flavored_markdown_to_html(body, options=GFM))
    return parser.tags


def test_clean_labels_pass_through_unchanged():
    for text in ("person", "traffic light", "min_area_frac", "Straße 12", "caption fits other regions too"):
        assert literal(text) == text


def test_data_puts_no_markup_in_the_card(cards):
    hostile, clean = cards
    for render in (_markdown_it_markup, _github_markup):
        made = render(_body(hostile))
        assert made == render(_body(clean)), render.__name__  # the card's own plots and nothing else
        assert not any("javascript" in str(m) or "evil" in str(m) or "e/x.png" in str(m) for m in made)


def test_data_is_shown_as_its_text(cards):
    hostile, _ = cards
    html = cmarkgfm.github_flavored_markdown_to_html(_body(hostile), options=GFM)
    rendered = re.sub(r"\s+", " ", html.replace("\u2060", ""))
    for label in [*HOSTILE_LABELS, *HOSTILE_LABELS_2, *HOSTILE_SOURCES]:
        text = " ".join(label.split())  # line breaks shown as spaces
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
        assert escaped in rendered, label


def _table_rows(body: str, heading: str) -> list[list[str]]:
    """The body rows of the table whose header holds ``heading``, as the text markdown-it shows in each cell."""
    tokens, rows, inside = MarkdownIt("gfm-like").parse(body), [], False
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            inside = False
        elif token.type == "inline" and tokens[i - 1].type == "th_open" and token.content == heading:
            inside = True
        elif inside and token.type == "tr_open" and tokens[i - 1].type != "thead_open":
            rows.append([])
        elif inside and rows and token.type == "inline" and tokens[i - 1].type == "td_open":
            rows[-1].append("".join(c.content for c in token.children if c.type in ("text", "softbreak")))
    return rows


def test_pipes_in_data_split_no_table_cell(cards):
    hostile, _ = cards
    rows = {row[0]: row[1:] for row in _table_rows(_body(hostile), "top labels (regions)")}
    for split, labels in (("train", HOSTILE_LABELS), ("validation", HOSTILE_LABELS_2)):
        assert len(rows[split]) == 1  # split | top labels: two cells, whatever the labels hold
        shown = " ".join(rows[split][0].replace("\u2060", "").split())
        assert all(f"{' '.join(label.split())} (1)" in shown for label in labels), shown
    reasons = dict(_table_rows(_body(hostile), "item"))
    assert reasons["region_failure_reasons / evidence: 'the <b>red</b> car' vs ![y](http://e/y.png)"] == "2"
