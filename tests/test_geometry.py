"""Property tests for the numpy pipeline: crops, heatmaps, points, paste-back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dextr_backend import geometry
from dextr_backend.errors import InputError

FAST = settings(max_examples=60, deadline=None)

shapes = st.tuples(st.integers(1, 40), st.integers(1, 40))


@st.composite
def image_and_box(draw):
    """An image (sometimes with channels) and a box that may stick out of it or miss it entirely."""
    h, w = draw(shapes)
    channels = draw(st.sampled_from([(), (3,)]))
    seed = draw(st.integers(0, 2**32 - 1))
    img = np.random.default_rng(seed).integers(1, 256, size=(h, w) + channels).astype(np.uint8)
    x0 = draw(st.integers(-60, w + 20))
    y0 = draw(st.integers(-60, h + 20))
    x1 = x0 + draw(st.integers(0, 70))
    y1 = y0 + draw(st.integers(0, 70))
    return img, (x0, y0, x1, y1)


def inside_box(shape, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)


# ---------------------------------------------------------------- crop / paste


@FAST
@given(image_and_box())
def test_crop_pasted_back_lands_where_it_came_from(data):
    img, box = data
    back = geometry.paste_padded(geometry.crop_padded(img, box), box, img.shape[:2])
    assert back.shape == img.shape and back.dtype == img.dtype
    keep = inside_box(img.shape, box)
    assert np.array_equal(back[keep], img[keep])
    assert not back[~keep].any()


@FAST
@given(image_and_box())
def test_crop_has_box_size_and_zeros_outside_the_image(data):
    img, box = data
    x0, y0, x1, y1 = box
    crop = geometry.crop_padded(img, box)
    assert crop.shape == (y1 - y0 + 1, x1 - x0 + 1) + img.shape[2:]
    h, w = img.shape[:2]
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    assert not crop[~inside].any()
    assert np.array_equal(crop[inside], img[ys[inside], xs[inside]])


# ---------------------------------------------------------------- heatmap


@FAST
@given(st.integers(8, 64), st.integers(8, 64), st.data())
def test_heatmap_peaks_at_the_points(h, w, data):
    n = data.draw(st.integers(1, 6))
    pts = np.array([[data.draw(st.integers(0, w - 1)), data.draw(st.integers(0, h - 1))] for _ in range(n)])
    sigma = data.draw(st.floats(1.0, float(min(h, w))))
    hm = geometry.heatmap(pts, (h, w), sigma)
    assert hm.shape == (h, w) and hm.dtype == np.float32
    assert hm.min() >= 0.0 and hm.max() <= 255.0
    assert hm.min() == pytest.approx(0.0, abs=1e-3)
    for x, y in pts:
        assert hm[y, x] == pytest.approx(255.0, abs=1e-3)
    # Pixels more than sigma away from every point are below the peak.
    ys, xs = np.mgrid[:h, :w]
    far = np.min([(xs - x) ** 2 + (ys - y) ** 2 for x, y in pts], axis=0) > sigma**2
    assert (hm[far] < 255.0 * 0.1).all()


@FAST
@given(st.integers(1, 10))
def test_heatmap_sigma_is_the_full_width_at_half_maximum(half):
    sigma = 2.0 * half
    size = int(6 * sigma) + 1
    c = size // 2
    hm = geometry.heatmap(np.array([[c, c]]), (size, size), sigma)
    for dx, dy in ((half, 0), (-half, 0), (0, half), (0, -half)):
        assert hm[c + dy, c + dx] == pytest.approx(127.5, abs=0.5)


# ---------------------------------------------------------------- as_points


@FAST
@given(shapes, st.data())
def test_points_on_the_border_are_accepted(shape, data):
    h, w = shape
    xs = st.sampled_from([0.0, float(w - 1)])
    ys = st.sampled_from([0.0, float(h - 1)])
    pts = [[data.draw(xs), data.draw(ys)] for _ in range(4)]
    out = geometry.as_points(pts, (h, w))
    assert out.dtype == np.float64 and out.shape == (4, 2)
    assert np.array_equal(out, pts)


@FAST
@given(shapes, st.integers(0, 3), st.sampled_from(["left", "right", "top", "bottom"]), st.floats(1e-6, 100.0))
def test_points_beyond_the_border_are_rejected(shape, which, side, by):
    h, w = shape
    pts = np.array([[0.0, 0.0], [w - 1.0, 0.0], [0.0, h - 1.0], [w - 1.0, h - 1.0]])
    if side == "left":
        pts[which, 0] = -by
    elif side == "right":
        pts[which, 0] = w - 1 + by
    elif side == "top":
        pts[which, 1] = -by
    else:
        pts[which, 1] = h - 1 + by
    with pytest.raises(InputError, match="outside"):
        geometry.as_points(pts, (h, w))


@pytest.mark.parametrize(
    "pts",
    [
        [],
        [[1, 1]],
        [[1, 1], [2, 2], [3, 3]],
    ],
)
def test_fewer_than_four_points_rejected(pts):
    with pytest.raises(InputError):
        geometry.as_points(pts, (10, 10))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_points_rejected(bad):
    with pytest.raises(InputError, match="finite"):
        geometry.as_points([[1, 1], [2, bad], [3, 3], [4, 4]], (10, 10))


@pytest.mark.parametrize(
    "pts",
    [
        [1, 2, 3, 4],
        [[1, 2, 3]] * 4,
        [[[1, 2]] * 4],
        [["a", "b"]] * 4,
        [[1, 2], [3, 4], [5], [6, 7]],
        None,
    ],
)
def test_wrong_shapes_rejected(pts):
    with pytest.raises(InputError):
        geometry.as_points(pts, (10, 10))


def test_five_points_and_no_image_shape():
    pts = geometry.as_points([[1, 1], [2, 2], [3, 3], [4, 4], [-5, 1e6]])
    assert pts.shape == (5, 2)


# ---------------------------------------------------------------- degenerate points


@st.composite
def degenerate_case(draw):
    h, w = draw(st.integers(1, 120)), draw(st.integers(1, 120))
    x, y = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
    kind = draw(st.sampled_from(["same", "horizontal", "vertical", "one-pixel-wide"]))
    if kind == "same":
        pts = [[x, y]] * 4
    elif kind == "horizontal":
        x2 = draw(st.integers(0, w - 1))
        pts = [[x, y], [x2, y], [(x + x2) // 2, y], [x2, y]]
    elif kind == "vertical":
        y2 = draw(st.integers(0, h - 1))
        pts = [[x, y], [x, y2], [x, (y + y2) // 2], [x, y2]]
    else:
        x2 = min(x + 1, w - 1)
        y2 = draw(st.integers(0, h - 1))
        pts = [[x, y], [x2, y2], [x, y2], [x2, y]]
    res = draw(st.sampled_from([16, 32, 64]))
    return (h, w), np.array(pts, dtype=np.float64), res


@FAST
@given(degenerate_case(), st.integers(0, 2**32 - 1))
def test_degenerate_points_give_finite_inputs_and_clean_paste_back(case, seed):
    (h, w), pts, res = case
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8)
    pts = geometry.as_points(pts, image.shape)
    x, crop = geometry.prepare_input(image, pts, res)
    assert x.shape == (res, res, 4) and x.dtype == np.float32
    assert np.isfinite(x).all()
    assert x[..., 3].max() == pytest.approx(255.0, abs=1e-3)
    prob = rng.random((res, res)).astype(np.float32)
    full = geometry.paste_back(prob, crop)
    assert full.shape == (h, w)
    assert np.isfinite(full).all() and full.min() >= 0.0 and full.max() <= 1.0
    tx0, ty0, tx1, ty1 = geometry.points_box(pts)
    assert not full[~inside_box((h, w), (tx0, ty0, tx1, ty1))].any()


# ---------------------------------------------------------------- extreme points


@st.composite
def random_mask(draw):
    h, w = draw(st.integers(1, 60)), draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.floats(0.02, 1.0))
    m = np.random.default_rng(seed).random((h, w)) < density
    assume(m.any())
    return m


@FAST
@given(random_mask())
def test_exact_extreme_points_are_the_mask_extremes(mask):
    ys, xs = np.nonzero(mask)
    pts = geometry.extreme_points(mask)
    assert pts.shape == (4, 2)
    assert mask[pts[:, 1], pts[:, 0]].all()
    assert pts[0, 0] == xs.min() and pts[1, 0] == xs.max()
    assert pts[2, 1] == ys.min() and pts[3, 1] == ys.max()
    again = geometry.extreme_points(mask, rng=np.random.default_rng(123))
    assert np.array_equal(pts, again)


@FAST
@given(random_mask(), st.integers(1, 10), st.integers(0, 2**32 - 1))
def test_jittered_extreme_points_stay_near_the_extremes(mask, jitter, seed):
    ys, xs = np.nonzero(mask)
    pts = geometry.extreme_points(mask, jitter=jitter, rng=np.random.default_rng(seed))
    assert mask[pts[:, 1], pts[:, 0]].all()
    assert xs.min() <= pts[0, 0] <= xs.min() + jitter
    assert xs.max() - jitter <= pts[1, 0] <= xs.max()
    assert ys.min() <= pts[2, 1] <= ys.min() + jitter
    assert ys.max() - jitter <= pts[3, 1] <= ys.max()


def test_jittered_points_follow_the_rng():
    mask = np.zeros((50, 50), bool)
    mask[10:40, 5:45] = True
    a = geometry.extreme_points(mask, jitter=5, rng=np.random.default_rng(7))
    b = geometry.extreme_points(mask, jitter=5, rng=np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_empty_mask_has_no_extreme_points():
    with pytest.raises(InputError):
        geometry.extreme_points(np.zeros((10, 10), bool))


# ---------------------------------------------------------------- prepare_input + paste_back


@st.composite
def shape_mask(draw):
    h, w = draw(st.integers(60, 220)), draw(st.integers(60, 220))
    bw, bh = draw(st.integers(20, w)), draw(st.integers(20, h))
    x0, y0 = draw(st.integers(0, w - bw)), draw(st.integers(0, h - bh))
    m = np.zeros((h, w), np.uint8)
    if draw(st.booleans()):
        m[y0 : y0 + bh, x0 : x0 + bw] = 1
    else:
        centre = (x0 + bw // 2, y0 + bh // 2)
        cv2.ellipse(m, centre, (max(bw // 2 - 1, 1), max(bh // 2 - 1, 1)), 0, 0, 360, 1, -1)
    return m.astype(bool)


@FAST
@given(shape_mask(), st.sampled_from([256, 512]))
def test_ground_truth_crop_survives_the_round_trip(mask, res):
    image = np.zeros(mask.shape + (3,), np.uint8)
    pts = geometry.extreme_points(mask).astype(np.float64)
    x, crop = geometry.prepare_input(image, pts, res)
    gt_crop = geometry.crop_padded(mask.astype(np.float32), crop.box)
    prob = cv2.resize(gt_crop, (res, res), interpolation=cv2.INTER_LINEAR)
    back = geometry.paste_back(prob, crop) >= 0.5
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou > 0.9
    # The heatmap's peaks are where the points went.
    bx0, by0, bx1, by1 = crop.box
    for px, py in pts:
        hx = int((int(px) - bx0) * res / (bx1 - bx0 + 1))
        hy = int((int(py) - by0) * res / (by1 - by0 + 1))
        assert x[hy, hx, 3] == pytest.approx(255.0, abs=1e-3)
