"""Label Studio's brush RLE: what its BrushLabels results carry, and not COCO RLE
(docs/ARCHITECTURE.md, "QA, dedup, splits, audits, release", known pitfalls).

The format is thi.ng's ``rle-pack`` over the mask flattened row-major to RGBA (every pixel four equal
bytes, 0 or 255): a bit stream of a 32-bit value count, the word size less one (5 bits, here 8), four
run-length field sizes less one (4 bits each, here 3, 4, 8, 16), then one record per run: a 1 bit
("repeat"), 2 bits choosing the field size, the run length less one in that many bits, the value in 8
bits. Runs longer than 2**16 are split. This mirrors ``label_studio_sdk.converter.brush.mask2rle``
byte for byte (its trailing padding included) without its per-bit string building or the SDK's
heavy imports, so a 4-megapixel mask encodes in milliseconds. ``decode`` reads a mask back from what
a reviewer exported.
"""

from __future__ import annotations

import numpy as np

_SIZES = (3, 4, 8, 16)  # run-length field sizes, as Label Studio's own encoder writes them
_MAX_RUN = 2**16


def encode(mask: np.ndarray) -> list[int]:
    """Bytes (as ints 0-255) of an HxW mask in Label Studio's brush RLE; non-zero pixels are painted."""
    if mask.ndim != 2:
        raise ValueError(f"a brush mask must be 2-D, got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        raise ValueError("a brush mask must have at least one pixel")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [flat.size]))) * 4  # four RGBA bytes per pixel
    values = np.where(flat[starts], 255, 0)

    # a run longer than 2**16 becomes full 2**16 pieces plus the rest, as the reference encoder does
    pieces = np.maximum((lengths - 1) // _MAX_RUN, 0) + 1
    run_values = np.repeat(values, pieces)
    run_lengths = np.full(int(pieces.sum()), _MAX_RUN, dtype=np.int64)
    last = np.cumsum(pieces) - 1
    run_lengths[last] = lengths - (pieces - 1) * _MAX_RUN
    field = np.searchsorted(np.array([2**s for s in _SIZES]), run_lengths)  # smallest field that holds length-1

    header = [(flat.size * 4, 32), (8 - 1, 5), *((s - 1, 4) for s in _SIZES)]
    head_values, head_widths = zip(*header, strict=True)
    n = run_lengths.size
    rec_values = np.stack([np.ones(n, np.int64), field, run_lengths - 1, run_values], axis=1).ravel()
    rec_widths = np.stack([np.ones(n, np.int64), np.full(n, 2), np.array(_SIZES)[field], np.full(n, 8)], axis=1).ravel()
    fields = np.concatenate((np.array(head_values, np.int64), rec_values))
    widths = np.concatenate((np.array(head_widths, np.int64), rec_widths))
    return _pack(fields, widths)


def _pack(fields: np.ndarray, widths: np.ndarray) -> list[int]:
    """Concatenate each value's ``width`` low bits, most significant first, then pad like Label Studio.

    Its encoder always appends ``8 - bits % 8`` zero bits: a whole zero byte when the stream already
    ends on a byte boundary. Decoders stop after the declared value count, so the padding is inert.
    """
    total = int(widths.sum())
    owner = np.repeat(np.arange(fields.size), widths)
    offset = np.arange(total) - np.repeat(np.cumsum(widths) - widths, widths)
    bits = (fields[owner] >> (widths[owner] - 1 - offset)) & 1
    bits = np.concatenate((bits, np.zeros(8 - total % 8, dtype=bits.dtype)))
    return np.packbits(bits.astype(np.uint8)).tolist()


def decode(rle: list[int], height: int, width: int) -> np.ndarray:
    """The HxW boolean mask of a brush RLE (what a reviewer painted): its alpha channel above half.

    The inverse of ``encode`` and the reader of what Label Studio's editor writes (literal runs
    included), as ``label_studio_sdk.converter.brush.decode_rle`` reads it.
    """
    data = np.asarray(rle, dtype=np.uint8)
    bits = (np.unpackbits(data) + ord("0")).tobytes().decode("ascii")
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > len(bits):
            raise ValueError("the brush RLE ends before its declared pixel count")
        pos += n
        return int(bits[pos - n:pos], 2)

    count, word = read(32), read(5) + 1
    if count != height * width * 4:
        raise ValueError(f"the brush RLE holds {count // 4} pixels, the image {height}x{width}={height * width}")
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint8)
    i = 0
    while i < count:
        repeat = read(1)
        j = min(count, i + 1 + read(sizes[read(2)]))
        if repeat:
            out[i:j] = read(word)
        else:
            out[i:j] = [read(word) for _ in range(j - i)]
        i = j
    return out.reshape(height, width, 4)[:, :, 3] > 127
