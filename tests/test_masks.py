import json

import numpy as np

from groundcap import masks


def _disk(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_encode_roundtrip_is_json_safe_and_exact():
    m = _disk(60, 80, 30, 20, 12)
    rle = masks.encode(m)
    assert rle["size"] == [60, 80] and isinstance(rle["counts"], str)
    json.dumps(rle)
    assert (masks.decode(rle) == m).all()
    assert masks.area(rle) == int(m.sum()) and isinstance(masks.area(rle), int)
    ys, xs = np.nonzero(m)
    assert masks.bbox(rle) == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_encode_accepts_c_ordered_and_non_bool_input():
    m = np.zeros((5, 7), dtype=np.int64)
    m[1:3, 2:6] = 1
    assert (masks.decode(masks.encode(m)) == m.astype(bool)).all()


def test_iou_union_intersection_subtract_match_dense_math():
    a, b = _disk(50, 50, 20, 20, 10), _disk(50, 50, 25, 28, 10)
    ra, rb = masks.encode(a), masks.encode(b)
    assert np.isclose(masks.iou([ra], [rb])[0, 0], (a & b).sum() / (a | b).sum())
    assert (masks.decode(masks.union([ra, rb])) == (a | b)).all()
    assert (masks.decode(masks.intersection(ra, rb)) == (a & b)).all()
    assert (masks.decode(masks.subtract(ra, rb)) == (a & ~b)).all()
    assert np.isclose(masks.containment(ra, rb), (a & b).sum() / a.sum())
    far = masks.encode(_disk(50, 50, 45, 45, 3))
    assert masks.subtract(ra, far) == ra


def test_nms_keeps_best_of_overlapping_and_all_disjoint():
    a = masks.encode(_disk(40, 40, 20, 20, 10))
    a2 = masks.encode(_disk(40, 40, 20, 21, 10))
    c = masks.encode(_disk(40, 40, 5, 5, 3))
    assert masks.nms([a, a2, c], [0.5, 0.9, 0.1], 0.7) == [1, 2]
    assert masks.nms([], [], 0.5) == []


def _random_masks(rng, n, h, w):
    out = []
    for _ in range(n):
        kind = rng.integers(3)
        if kind == 0:
            m = rng.random((h, w)) < rng.random()
        else:
            m = np.zeros((h, w), bool)
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m[y0:y0 + rng.integers(1, h + 1), x0:x0 + rng.integers(1, w + 1)] = kind == 1
        out.append(m)
    return out


def test_rle_set_operations_match_dense_without_decoding():
    rng = np.random.default_rng(7)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        a, b = _random_masks(rng, 2, h, w)
        ra, rb = masks.encode(a), masks.encode(b)
        assert masks.run_lengths(ra).sum() == h * w
        assert np.array_equal(masks.decode(masks.complement(ra)), ~a)
        assert np.array_equal(masks.decode(masks.subtract(ra, rb)), a & ~b)
        assert masks.intersection_areas([ra, rb], [rb]).tolist() == [[int((a & b).sum())], [int(b.sum())]]
        assert masks.empty(h, w) == masks.encode(np.zeros((h, w), bool))


def test_nms_with_box_bounds_keeps_what_brute_force_keeps():
    rng = np.random.default_rng(3)
    for _ in range(30):
        group = _random_masks(rng, 12, 30, 30)
        rles = [masks.encode(m) for m in group]
        scores = rng.random(12).tolist()
        ious = masks.iou(rles, rles)
        expected = []
        for i in sorted(range(12), key=lambda i: (-scores[i], i)):
            if all(ious[i, j] <= 0.5 for j in expected):
                expected.append(i)
        assert masks.nms(rles, scores, 0.5) == expected
