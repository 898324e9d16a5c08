"""Colour naming's memo (``colors.name_codes``): the names it gives are the exact ones, each colour named once."""

from __future__ import annotations

from unittest import mock

import numpy as np

from groundcap import colors


def test_memoised_names_equal_naming_each_pixel_on_its_own():
    """Random colours over the whole sRGB cube (so near every boundary between names), named in two calls that
    overlap, so the second reads half of them from the memo: every name is the one the Lab rule gives."""
    pixels = np.random.default_rng(26).integers(0, 256, (30_000, 3), dtype=np.uint8)
    colors.name_codes(pixels[:15_000])
    names = colors._SORTED[colors.name_codes(pixels)]
    assert (names == colors.name_pixels(colors.to_lab(pixels))).all()
    assert colors.color_shares(pixels[:5000]) == sorted(
        ((str(n), c / 5000) for n, c in zip(*np.unique(names[:5000], return_counts=True), strict=True)),
        key=lambda s: (-s[1], s[0]))


def test_colour_shares_convert_each_distinct_colour_once():
    """A region's pixels are mostly colours other regions (and images) already had: only new ones reach Lab."""
    pixels = np.random.default_rng(7).integers(0, 256, (4000, 3), dtype=np.uint8)
    region = np.concatenate([pixels, pixels[::-1], pixels])
    with mock.patch.object(colors, "to_lab", wraps=colors.to_lab) as to_lab:
        first = colors.color_shares(region)
        assert colors.color_shares(region) == first
    assert sum(len(call.args[0]) for call in to_lab.call_args_list) <= len(np.unique(pixels, axis=0))
