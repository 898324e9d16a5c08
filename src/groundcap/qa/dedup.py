"""Near-duplicate detection: perceptual hashes with a Hamming index, MinHash for captions, clusters.

Images. ``phashes`` is a 64-bit DCT hash (32x32 resample, 8x8 lowest frequencies, bits against the
median of the AC terms) of the whole picture, followed by the same hash of 9 crop windows (92% of each
side, offset 0/4/8% on each axis). Two images pair when the whole-picture hash of one lies within
``max_distance`` of any hash of the other, so a copy cropped by up to ~5% a side still meets the
window of the original it shows. The hash is taken on HSV value (per-pixel max of R, G, B), not
luminance: a hue rotation leaves it unchanged; brightness and saturation changes move it little.
Each hash has 32 bits set (ties aside), so distances are even: 8 and 9 are the same threshold.

Measured (``tests/test_dedup.py``: 57 distinct photos and tiles of photos, each with a resized, a
JPEG q30-60, a 2-5%-a-side cropped, a colour-shifted and a combined copy; six seeds of edits) at
distance 8: recall >= 0.965 over pairs linked directly (precision >= 0.993) and >= 0.974 through
clusters (precision >= 0.959; the false links all join tiles of one retina photo). At 10, recall
is >= 0.98 but cluster precision falls to 0.922. Without the windows, crops sit up to 26 bits away
and pair recall at 8 falls to 0.77-0.79. A finer 256-bit hash as a second check did not separate
the remaining errors, so there is none.

Index. Multi-index hashing: the 64 bits are cut into m chunks and the ``max_distance + 1`` units of
tolerance shared out as per-chunk radii s_c with sum(s_c + 1) = r + 1, so any pair within r agrees
within s_c on some chunk c (pigeonhole). Each chunk probes a direct-address table with every key
within s_c of the query's. Chunks are as wide as keeps buckets below 1/16 full, so a query costs its
probe count, set by r rather than n: from ~4k to ~130k entries, 3 chunks of 21-22 bits (~700 probes
at r = 8, ~3600 at 10); 10x the hashes cost 6-7x (r = 8) and 12-13x (r = 10) the time. Narrower
chunks are quicker on small sets but, with buckets filling, grow 25-45x per 10x.

Captions. MinHash over word 2-shingles, LSH banding sized so a pair at the Jaccard threshold becomes
a candidate with probability >= 0.99, then each candidate verified by its estimated Jaccard.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re

import numpy as np
import scipy.fft
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

WINDOW = 0.92  # crop windows' side, as a fraction of the image's
OFFSETS = (0.0, 0.04, 0.08)  # their offsets along each axis
_WORK_SIDE = 128  # images are brought to this square once, windows are resampled from it
_PROBE_BUDGET = 4096  # probes per query before the index prefers more, narrower chunks
_BLOCK = 1 << 18  # probes per vectorized step
_MINHASH_BLOCK = 1 << 20  # (permutation, shingle) values per step: each of _mix's temporaries is 8 MB

SHINGLE = 2  # words per caption shingle: one word changed in a 25-word caption keeps Jaccard ~0.85
EMPTY = np.iinfo(np.uint64).max  # the signature of a text with no words: pairs with nothing
_WORD = re.compile(r"\w+")


# --- images ----------------------------------------------------------------------------------------

def phashes(rgb: np.ndarray) -> np.ndarray:
    """The whole image's 64-bit phash, then its crop windows' (uint64, 1 + len(OFFSETS)**2)."""
    value = Image.fromarray(np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]))  # 25x rgb.max(axis=2)
    work = value.resize((_WORK_SIDE, _WORK_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    side = _WORK_SIDE
    boxes = [(0.0, 0.0, side, side)] + [
        (x * side, y * side, (x + WINDOW) * side, (y + WINDOW) * side) for y, x in itertools.product(OFFSETS, OFFSETS)
    ]
    thumbs = np.stack([np.asarray(work.resize((32, 32), Image.Resampling.LANCZOS, box=b), dtype=np.float64)
                       for b in boxes])
    low = scipy.fft.dctn(thumbs, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(boxes), 64)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def phash(rgb: np.ndarray) -> int:
    return int(phashes(rgb)[0])


def pixel_hash(rgb: np.ndarray) -> str:
    """SHA-256 of the decoded pixels and their shape: one picture saved in two encodings hashes alike."""
    digest = hashlib.sha256(np.asarray(rgb.shape, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(rgb).data)
    return digest.hexdigest()


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances of uint64 hashes, elementwise (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def image_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Image pairs (i < j, sorted) whose whole-image hash lies within ``max_distance`` of any of the
    other's hashes (``hashes``: one ``phashes`` row per image), and each pair's smallest distance."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n, k = hashes.shape
    q, e = search(hashes[:, 0], hashes.ravel(), max_distance).T
    d = distance(hashes[q, 0], hashes.ravel()[e])
    owner = e // k
    keep = owner != q
    lo, hi, d = np.minimum(q, owner)[keep], np.maximum(q, owner)[keep], d[keep]
    order = np.lexsort((d, hi, lo))
    lo, hi, d = lo[order], hi[order], d[order]
    first = np.ones(len(lo), bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return np.stack([lo[first], hi[first]], axis=1), d[first]


# --- the Hamming index -----------------------------------------------------------------------------

def near_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Index pairs (i < j, sorted) of 64-bit hashes within ``max_distance`` bits: shape (k, 2)."""
    pairs = search(hashes, hashes, max_distance)
    return pairs[pairs[:, 0] < pairs[:, 1]]


def search(queries: np.ndarray, index: np.ndarray, max_distance: int) -> np.ndarray:
    """Every (query, entry) pair within ``max_distance`` bits, sorted: shape (k, 2) of positions."""
    queries, index = np.asarray(queries, dtype=np.uint64), np.asarray(index, dtype=np.uint64)
    if not len(queries) or not len(index):
        return np.zeros((0, 2), np.int64)
    found = [np.zeros(0, np.int64)]
    low_bit = 0
    for width, radius in plan(len(index), max_distance):
        chunk = np.uint64((1 << width) - 1)
        keys = ((index >> np.uint64(low_bit)) & chunk).astype(np.int64)
        probes = ((queries >> np.uint64(low_bit)) & chunk).astype(np.int64)
        low_bit += width
        if radius >= 0:
            found.append(_probe_chunk(queries, index, probes, keys, width, radius, max_distance))
    codes = np.unique(np.concatenate(found))
    return np.stack([codes // len(index), codes % len(index)], axis=1)


def plan(n: int, max_distance: int) -> list[tuple[int, int]]:
    """(width, radius) per chunk: the most chunks whose buckets stay below 1/16 full on ``n`` entries
    (at least 3: tables of at most 2^22 entries), then more while a query would make too many probes."""
    if not 0 <= max_distance <= 64:
        raise ValueError(f"max_distance must be within 0..64, got {max_distance}")
    fits = [m for m in range(3, 65) if 2 ** (64 // m) >= 16 * max(n, 1)]
    m = max(fits, default=3)
    while True:
        widths = [64 // m + (c < 64 % m) for c in range(m)]
        radii = [(max_distance + 1) // m + (c < (max_distance + 1) % m) - 1 for c in range(m)]
        probes = sum(_ball(w, s) for w, s in zip(widths, radii, strict=True))
        if m == 64 or probes <= _PROBE_BUDGET:
            return list(zip(widths, radii, strict=True))
        m += 1


def _ball(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(radius + 1))


def _flips(width: int, radius: int) -> np.ndarray:
    """Every mask of at most ``radius`` set bits among ``width``."""
    masks = [sum(1 << b for b in bits) for k in range(radius + 1) for bits in itertools.combinations(range(width), k)]
    return np.asarray(masks, dtype=np.int64)


def _probe_chunk(queries, index, probes, keys, width, radius, max_distance) -> np.ndarray:
    """Codes ``query * len(index) + entry`` of pairs within ``max_distance`` among those whose chunk
    keys lie within ``radius``: a direct-address table of bucket starts, queries sorted by key so each
    batch of probes sweeps the table in order."""
    order = np.argsort(keys, kind="stable")
    # bucket k holds sorted entries starts[k]:starts[k + 1], counted and summed in place: no table of counts beside
    # it (at 2^22 buckets another 32 MB of the dedup stage's peak)
    starts = np.bincount(keys + 1, minlength=(1 << width) + 1)
    np.cumsum(starts, out=starts)
    occupied = starts[1:] != starts[:-1]  # probed first: a small table, mostly in cache
    sorted_hashes = index[order]
    by_key = np.argsort(probes, kind="stable")
    probes = probes[by_key]
    flips = _flips(width, radius)
    per_step = max(1, int(_BLOCK / (1 + len(index) / (1 << width))))  # probes per step, by expected bucket size
    q_step = min(len(probes), per_step)
    f_step = max(1, per_step // max(q_step, 1))
    found = [np.zeros(0, np.int64)]
    for q0, f0 in itertools.product(range(0, len(probes), q_step), range(0, len(flips), f_step)):
        block = probes[q0:q0 + q_step]
        p = (flips[f0:f0 + f_step, None] ^ block[None, :]).ravel()
        hit = np.flatnonzero(occupied[p])
        lo = starts[p[hit]]
        size = starts[p[hit] + 1] - lo
        q = np.repeat(by_key[q0 + hit % len(block)], size)
        pos = np.arange(size.sum()) + np.repeat(lo - (np.cumsum(size) - size), size)
        close = distance(queries[q], sorted_hashes[pos]) <= max_distance
        found.append(q[close] * len(index) + order[pos[close]])
    return np.concatenate(found)


# --- captions --------------------------------------------------------------------------------------

def minhash(texts: list[str | None], num_perm: int = 128, seed: int = 0) -> np.ndarray:
    """MinHash signatures (uint64, len(texts) x num_perm) of each text's word 2-shingles (lowercase);
    a text with no words gets the row ``EMPTY``. Permutation k is a 64-bit mix of the shingle's hash
    xor a seeded key: a linear ``(a*x + b) mod p`` lets small hashes win most permutations together."""
    keys = np.random.default_rng(seed).integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True)
    shingles = [_shingles(t) for t in texts]
    sizes = np.array([len(s) for s in shingles], dtype=np.int64)
    sig = np.full((len(texts), num_perm), EMPTY, dtype=np.uint64)
    rows = np.flatnonzero(sizes)
    if not len(rows):
        return sig
    values = np.concatenate([shingles[i] for i in rows])
    starts = np.r_[0, np.cumsum(sizes[rows])[:-1]]
    step = max(1, _MINHASH_BLOCK // len(values))
    for k in range(0, num_perm, step):
        sig[rows, k:k + step] = np.minimum.reduceat(_mix(keys[k:k + step, None] ^ values[None, :]), starts, axis=1).T
    return sig


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit flips about half the output bits (wrapping uint64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _shingles(text: str | None) -> np.ndarray:
    words = _WORD.findall((text or "").lower())
    grams = {" ".join(words[i:i + SHINGLE]) for i in range(max(len(words) - SHINGLE + 1, 1))} if words else set()
    return np.array([int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "big") for g in sorted(grams)],
                    dtype=np.uint64)


def jaccard(signatures: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of each pair: the share of equal signature entries."""
    return (signatures[pairs[:, 0]] == signatures[pairs[:, 1]]).mean(axis=1)


def caption_pairs(signatures: np.ndarray, min_jaccard: float) -> np.ndarray:
    """Pairs (i < j, sorted) whose estimated Jaccard is at least ``min_jaccard``, found by LSH banding
    (no all-pairs); identical signatures are linked to their first row. ``EMPTY`` rows never pair."""
    if not 0 < min_jaccard <= 1:
        raise ValueError(f"min_jaccard must be in (0, 1], got {min_jaccard}")
    valid = np.flatnonzero((signatures != EMPTY).any(axis=1))
    if not len(valid):
        return np.zeros((0, 2), np.int64)
    unique, first, inverse = np.unique(signatures[valid], axis=0, return_index=True, return_inverse=True)
    same = valid[_to_first(first, inverse)]
    rows = _rows_per_band(signatures.shape[1], min_jaccard)
    weights = np.random.default_rng(0).integers(1, 1 << 62, rows, dtype=np.uint64) | np.uint64(1)
    kept = [np.zeros((0, 2), np.int64)]
    for start in range(0, signatures.shape[1] - rows + 1, rows):
        keys = (unique[:, start:start + rows] * weights).sum(axis=1)  # wraps: a hash of the band
        # each chunk of candidates is judged as it is made, so memory holds the similar pairs, not every pair
        # that shares a bucket (which grows with the square of the look-alike captions)
        band = [chunk[jaccard(unique, chunk) >= min_jaccard] for chunk in _equal_key_pairs(keys)]
        kept = [np.unique(np.concatenate(kept + band), axis=0)]
    similar = np.sort(valid[first[kept[0]]], axis=1)
    pairs = np.concatenate([same, similar])
    return np.unique(np.sort(pairs, axis=1), axis=0)


def equal_pairs(values) -> np.ndarray:
    """(first, other) index pairs linking every repeated value (or row) to its first occurrence."""
    _, first, inverse = np.unique(np.asarray(values), axis=0, return_index=True, return_inverse=True)
    return _to_first(first, inverse)


def _to_first(first: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    pairs = np.stack([first[inverse.ravel()], np.arange(inverse.size)], axis=1).astype(np.int64)
    return pairs[pairs[:, 0] != pairs[:, 1]].reshape(-1, 2)


def _rows_per_band(num_perm: int, min_jaccard: float) -> int:
    """The most rows per band for which a pair at ``min_jaccard`` shares a band with p >= 0.99."""
    ok = [r for r in range(1, num_perm + 1) if 1 - (1 - min_jaccard ** r) ** (num_perm // r) >= 0.99]
    return max(ok, default=1)


def _equal_key_pairs(keys: np.ndarray, chunk: int = 1 << 14):
    """All pairs (i < j) of positions whose keys are equal, in chunks of at most ``chunk`` pairs."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    gap = 1
    while gap < len(k):
        same = np.flatnonzero(k[gap:] == k[:-gap])
        if not len(same):
            break
        for at in range(0, len(same), chunk):
            part = same[at:at + chunk]
            yield np.sort(np.stack([order[part], order[part + gap]], axis=1), axis=1)
        gap += 1


# --- clusters --------------------------------------------------------------------------------------

def clusters(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of ``pairs`` over ``n`` items, each labelled by its smallest member."""
    if not n:
        return np.zeros(0, np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs), bool), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(smallest, comp, np.arange(n))
    return smallest[comp]


def best_of(labels: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each item, the member of its cluster with the lowest ``rank`` (labels as from ``clusters``)."""
    order = np.lexsort((rank, labels))
    head = np.ones(len(order), bool)
    head[1:] = labels[order][1:] != labels[order][:-1]
    best = np.zeros(len(labels), dtype=np.int64)
    best[labels[order][head]] = order[head]
    return best[labels]
