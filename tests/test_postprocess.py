"""Mask clean-up and polygon conversion."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dextr_backend.postprocess import (
    CLICK_RADIUS,
    Polygon,
    PostProcess,
    fill_small_holes,
    keep_clicked_components,
    mask_to_polygons,
    polygons_to_json,
    polygons_to_mask,
)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def disc(shape, centre, radius) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, centre, radius, 1, -1)
    return m.astype(bool)


def extremes_of(mask):
    ys, xs = np.nonzero(mask)
    return np.array(
        [
            [xs.min(), ys[xs.argmin()]],
            [xs.max(), ys[xs.argmax()]],
            [xs[ys.argmin()], ys.min()],
            [xs[ys.argmax()], ys.max()],
        ],
        float,
    )


# ---------------------------------------------------------------- connected components


def test_far_blobs_removed_clicked_blob_kept():
    obj = disc((100, 120), (40, 50), 20)
    stray = disc((100, 120), (100, 20), 8)
    out = PostProcess(keep_connected=True)(obj | stray, extremes_of(obj))
    assert np.array_equal(out, obj)


def test_blob_just_off_a_click_is_kept():
    obj = disc((80, 80), (40, 40), 15)
    pts = extremes_of(obj)
    pts[0, 0] -= CLICK_RADIUS - 1  # left click a little outside the mask
    other = np.zeros_like(obj)
    other[5:10, 70:75] = True
    out = keep_clicked_components(obj | other, pts[:1])
    assert np.array_equal(out, obj)


def test_every_clicked_component_is_kept():
    a = disc((60, 120), (20, 30), 10)
    b = disc((60, 120), (90, 30), 10)
    c = disc((60, 120), (55, 52), 4)
    pts = np.array([[20, 30], [90, 30], [20, 21], [90, 39]], float)
    assert np.array_equal(keep_clicked_components(a | b | c, pts), a | b)


def test_no_clicked_component_keeps_the_largest():
    big = disc((60, 120), (30, 30), 12)
    small = disc((60, 120), (90, 30), 5)
    pts = np.array([[60, 5], [60, 55], [59, 5], [61, 55]], float)
    assert np.array_equal(keep_clicked_components(big | small, pts), big)


def test_diagonal_pixels_are_one_component():
    m = np.zeros((10, 10), bool)
    m[2, 2] = m[3, 3] = m[4, 4] = True
    assert np.array_equal(keep_clicked_components(m, np.array([[2.0, 2.0]])), m)


def test_disabled_and_empty_masks_pass_through():
    m = disc((50, 50), (10, 10), 5) | disc((50, 50), (40, 40), 5)
    pts = np.array([[10, 10]] * 4, float)
    assert np.array_equal(PostProcess(keep_connected=False)(m, pts), m)
    empty = np.zeros((20, 20), bool)
    assert not PostProcess(keep_connected=True, max_hole_fraction=0.5)(empty, pts).any()


# ---------------------------------------------------------------- holes


def test_holes_filled_only_below_the_fraction():
    m = disc((100, 100), (50, 50), 40)
    small, large = disc((100, 100), (35, 50), 3), disc((100, 100), (62, 50), 10)
    holed = m & ~small & ~large
    area = holed.sum()
    assert small.sum() < 0.01 * area < large.sum() < 0.1 * area
    out = fill_small_holes(holed, 0.01)
    assert np.array_equal(out, m & ~large)
    assert np.array_equal(fill_small_holes(holed, 0.1), m)
    assert np.array_equal(PostProcess(keep_connected=False, max_hole_fraction=0.0)(holed, None), holed)


def test_notch_open_to_the_border_is_not_a_hole():
    m = np.ones((40, 40), bool)
    m[0:10, 18:22] = False  # a bay touching the image border
    assert np.array_equal(fill_small_holes(m, 0.5), m)


def test_diagonal_gap_still_closes_a_hole():
    """The mask is 8-connected, so background leaking through a diagonal gap stays enclosed."""
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    m[3, 3] = False
    out = fill_small_holes(m, 0.5)
    assert out[3, 3]


def test_trim_erodes_the_boundary_by_whole_pixels():
    from dextr_backend.postprocess import trim_boundary

    square = np.zeros((20, 20), bool)
    square[5:15, 5:15] = True
    once = trim_boundary(square, 1)
    assert once.sum() == 8 * 8 and once[6:14, 6:14].all()
    assert trim_boundary(square, 2).sum() < once.sum()
    assert trim_boundary(square, 0) is not None and (trim_boundary(square, 0) == square).all()


def test_trim_never_erases_a_thin_object():
    line = np.zeros((20, 20), bool)
    line[10, 2:18] = True  # one pixel wide: a trim would leave nothing
    assert (trim_boundary_via_postprocess(line) == line).all()


def trim_boundary_via_postprocess(mask):
    pts = np.array([[2, 10], [17, 10], [10, 10], [10, 10]], float)
    return PostProcess(trim=1)(mask, pts)


def test_default_postprocess_is_the_evaluated_choice():
    # Chosen on BSDS500 validation with benchmarks/postprocess.py (see weights/bsds-lite0-v3.md).
    assert PostProcess() == PostProcess(keep_connected=True, max_hole_fraction=0.05)


# ---------------------------------------------------------------- polygons


def blobby(seed: int, shape=(120, 160)) -> np.ndarray:
    """Union of random ellipses with a few elliptic holes cut out."""
    rng = np.random.default_rng(seed)
    m = np.zeros(shape, np.uint8)
    h, w = shape
    for _ in range(3):
        cv2.ellipse(
            m,
            (int(rng.integers(50, w - 50)), int(rng.integers(40, h - 40))),
            (int(rng.integers(15, 40)), int(rng.integers(15, 35))),
            float(rng.uniform(0, 180)),
            0,
            360,
            1,
            -1,
        )
    for _ in range(2):
        cv2.ellipse(
            m,
            (int(rng.integers(50, w - 50)), int(rng.integers(40, h - 40))),
            (int(rng.integers(3, 8)), int(rng.integers(3, 8))),
            float(rng.uniform(0, 180)),
            0,
            360,
            0,
            -1,
        )
    return m.astype(bool)


@pytest.mark.parametrize("seed", range(10))
def test_polygons_round_trip(seed):
    m = blobby(seed)
    polys = mask_to_polygons(m)
    assert iou(polygons_to_mask(polys, m.shape), m) > 0.95
    exact = mask_to_polygons(m, epsilon=0, min_area=0)
    assert iou(polygons_to_mask(exact, m.shape), m) > 0.995


def test_ring_gives_one_exterior_with_one_hole():
    ring = disc((80, 80), (40, 40), 30) & ~disc((80, 80), (40, 40), 15)
    polys = mask_to_polygons(ring)
    assert len(polys) == 1 and len(polys[0].holes) == 1
    assert iou(polygons_to_mask(polys, ring.shape), ring) > 0.95
    assert polys[0].exterior.shape[1] == 2 and polys[0].exterior.dtype == np.float64


def test_square_hole_survives_simplification_exactly():
    m = np.zeros((30, 30), bool)
    m[3:25, 3:25] = True
    m[8:14, 9:17] = False
    polys = mask_to_polygons(m, epsilon=1.0)
    assert np.array_equal(polygons_to_mask(polys, m.shape), m)
    assert len(polys[0].exterior) == 4 and len(polys[0].holes[0]) == 4


def test_object_inside_a_hole_is_its_own_polygon():
    m = disc((90, 90), (45, 45), 40) & ~disc((90, 90), (45, 45), 25)
    m |= disc((90, 90), (45, 45), 10)
    polys = mask_to_polygons(m)
    assert len(polys) == 2 and sorted(len(p.holes) for p in polys) == [0, 1]
    assert iou(polygons_to_mask(polys, m.shape), m) > 0.95


def test_tiny_pieces_dropped():
    m = np.zeros((40, 40), bool)
    m[5:25, 5:25] = True
    m[30, 30] = True  # speck
    m[12, 12] = False  # pinhole
    polys = mask_to_polygons(m, min_area=4)
    assert len(polys) == 1 and polys[0].holes == []
    assert len(mask_to_polygons(m, min_area=1)) == 2
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []


def test_thin_line_is_not_tiny():
    m = np.zeros((10, 30), bool)
    m[4, 2:25] = True
    polys = mask_to_polygons(m, min_area=4)
    assert len(polys) == 1
    assert np.array_equal(polygons_to_mask(polys, m.shape), m)


def test_polygons_to_json_is_plain_lists():
    m = disc((80, 80), (40, 40), 30) & ~disc((80, 80), (40, 40), 15)
    polys = mask_to_polygons(m)
    data = json.loads(json.dumps(polygons_to_json(polys)))
    assert set(data[0]) == {"exterior", "holes"}
    assert all(len(xy) == 2 for xy in data[0]["exterior"])


def test_polygons_to_mask_includes_the_edges():
    poly = Polygon(exterior=np.array([[2, 2], [12, 2], [12, 8], [2, 8]], float))
    out = polygons_to_mask([poly], (10, 15))
    assert out.sum() == 11 * 7 and out.dtype == bool


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_working_on_the_masks_box_gives_what_the_whole_picture_gives(seed, trim):
    """``PostProcess`` runs its steps on the mask's box plus a margin; each step on the whole
    picture must agree, ties between equal blobs and clicks on half pixels included."""
    from dextr_backend.postprocess import trim_boundary

    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(12, 120, 2))
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    x1, y1 = int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1))
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > rng.uniform(0.2, 0.7)
    points = np.round(np.c_[rng.uniform(x0, x1 - 1, 4), rng.uniform(y0, y1 - 1, 4)] * 2) / 2
    whole = fill_small_holes(keep_clicked_components(trim_boundary(mask, trim), points), 0.05)
    np.testing.assert_array_equal(PostProcess(trim=trim)(mask, points), whole)
