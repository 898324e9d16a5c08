"""The audit gallery: one self-contained HTML page a reviewer opens offline, from a file or an e-mail.

Each image is shown at most ``MAX_SIDE`` pixels wide with an RGBA overlay (every released region's
mask in its own colour at half opacity, with an opaque outline) and its region id placed at the
mask's innermost pixel, so a label never floats outside a ring-shaped region. Below it: the scene
caption with its grounded phrases marked in their region's colour, then one row per region with its
captions, QA score and the claims QA checked against the pixels. Images are base64 data URIs and
nothing depends on time or on the machine, so the same sample renders the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping

import numpy as np
from PIL import Image
from scipy import ndimage

from groundcap import grounding, masks
from groundcap.ingest import decode_rgb

MAX_SIDE = 640
FILL_ALPHA = 128
OUTLINE_PX = 2
# Distinct colours (Kelly's and Glasbey's first), chosen so neighbours in id order differ strongly.
PALETTE = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
    "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
    "#808000", "#ffd8b1", "#000075", "#a9a9a9",
)


def color(region_id: int) -> str:
    return PALETTE[region_id % len(PALETTE)]


def rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))


def display_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def overlay(regions: Iterable[Mapping], size: tuple[int, int]) -> tuple[bytes, dict[int, tuple[float, float]]]:
    """The overlay PNG at ``size`` and, per region, where its id goes (fractions of width and height)."""
    w, h = size
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    anchors = {}
    for region in regions:
        full = masks.decode(region["segmentation"])
        mask = np.asarray(Image.fromarray(full).resize((w, h), Image.Resampling.NEAREST))
        if not mask.any():  # too thin to survive the downscale: mark its box centre instead
            x, y, bw, bh = region["bbox"]
            anchors[region["region_id"]] = ((x + bw / 2) / full.shape[1], (y + bh / 2) / full.shape[0])
            continue
        r, g, b = rgb(color(region["region_id"]))
        rgba[mask] = (r, g, b, FILL_ALPHA)
        edge = mask & ~ndimage.binary_erosion(mask, iterations=OUTLINE_PX, border_value=0)
        rgba[edge] = (r, g, b, 255)
        depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        anchors[region["region_id"]] = ((x + 0.5) / w, (y + 0.5) / h)
    return _png(Image.fromarray(rgba, "RGBA")), anchors


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def scene_html(text: str) -> str:
    """The grounded scene caption, escaped, each reference underlined in its region's colour."""
    out, last = [], 0
    for rid, phrase in grounding.references(text):
        tagged = grounding.ref(rid, phrase)
        start = text.index(tagged, last)
        out.append(html.escape(text[last:start]))
        out.append(f'<span class="ref" style="border-color:{color(rid)}">{html.escape(phrase)}<sup>{rid}</sup></span>')
        last = start + len(tagged)
    out.append(html.escape(text[last:]))
    return "".join(out)


def _claims(evidence: Iterable[Mapping]) -> str:
    rows = [f'<li class="{html.escape(c["verdict"])}"><b>{html.escape(c["verdict"])}</b> {html.escape(c["kind"])}: '
            f'&ldquo;{html.escape(c["claim"])}&rdquo; <i>{html.escape(c["detail"] or "")}</i></li>' for c in evidence]
    return f"<ul>{''.join(rows)}</ul>" if rows else '<span class="none">none</span>'


def item_html(item: Mapping, stratum: str) -> str:
    w, h = display_size(item["width"], item["height"])
    picture = Image.fromarray(decode_rgb(item["bytes"])).resize((w, h), Image.Resampling.LANCZOS)
    png, anchors = overlay(item["regions"], (w, h))
    labels = "".join(
        f'<span class="rid" style="left:{100 * x:.2f}%;top:{100 * y:.2f}%;background:{color(rid)}">{rid}</span>'
        for rid, (x, y) in anchors.items()
    )
    rows = "".join(
        f'<tr><td><span class="swatch" style="background:{color(r["region_id"])}"></span>{r["region_id"]}</td>'
        f'<td>{html.escape(r["label"] or "")}</td><td>{html.escape(r["short"])}</td>'
        f'<td>{html.escape(r["detailed"])}</td>'
        f'<td>{r["qa_score"]:.2f}</td><td>{_claims(r["evidence"])}</td></tr>'
        for r in item["regions"]
    )
    flags = f'<p class="flags">QA flags: {html.escape("; ".join(item["reasons"]))}</p>' if item["reasons"] else ""
    return (
        f'<section class="item" id="{html.escape(item["image_id"])}">'
        f'<h2>{html.escape(item["image_id"])}</h2>'
        f'<p class="meta">{html.escape(stratum)} &middot; QA score {item["qa_score"]:.2f} &middot; '
        f'{html.escape(item["source_path"])} &middot; {item["width"]}&times;{item["height"]}</p>'
        f'<div class="figure" style="width:{w}px;height:{h}px">'
        f'<img src="{_uri(_jpeg(picture), "image/jpeg")}" width="{w}" height="{h}" alt="the image">'
        f'<img class="overlay" src="{_uri(png, "image/png")}" width="{w}" height="{h}" alt="region masks">'
        f"{labels}</div>"
        f'<p class="scene">{scene_html(item["scene_caption"])}</p>'
        f"<details><summary>claims checked in the scene caption</summary>{_claims(item['scene_evidence'])}</details>"
        f"{flags}"
        f"<table><tr><th>region</th><th>label</th><th>short caption</th><th>detailed caption</th><th>QA</th>"
        f"<th>claims checked</th></tr>{rows}</table></section>"
    )


_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
.item{border-top:2px solid #ccc;padding:12px 0}
.meta,.flags{color:#555;font-size:13px}
.figure{position:relative}
.figure img{position:absolute;left:0;top:0;display:block}
.rid{position:absolute;transform:translate(-50%,-50%);color:#fff;font:bold 11px monospace;padding:1px 3px;
border-radius:3px;text-shadow:0 0 2px #000}
.ref{border-bottom:3px solid;padding-bottom:1px}
.ref sup{font-size:9px;color:#555}
.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
table{border-collapse:collapse;font-size:13px;margin-top:8px}
td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:top;text-align:left}
ul{margin:0;padding-left:16px}
.contradicted b{color:#c00}.supported b{color:#070}.unverifiable b{color:#888}.none{color:#999}
"""


def render(items: Iterable[Mapping], strata: Mapping[str, str], summary: str) -> str:
    """The gallery page for ``items`` (as ``sample.read_rows`` builds them), in the order given."""
    body = "".join(item_html(item, strata[item["image_id"]]) for item in items)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>groundcap audit sample</title>'
            f"<style>{_STYLE}</style></head><body><h1>groundcap audit sample</h1><p>{html.escape(summary)}</p>"
            f"{body}</body></html>\n")
