"""Points, boxes, crops, heatmaps and paste-back: the DEXTR pipeline in numpy.

Everything here follows the official inference code (``demo.py`` and ``helpers.py`` of
DEXTR-PyTorch) as summarised in ``shared/reference/dextr.md``:

1. box = bounding box of the extreme points enlarged by ``pad`` (50 px) on every side;
   parts outside the image are zero-padded, never clipped;
2. crop to the box and resize to the working resolution (512 for the paper), bicubic;
3. heatmap: one Gaussian ``exp(-4 ln2 d^2 / sigma^2)`` per point (sigma = FWHM = 10 px at
   512), combined by pixel-wise max, rescaled to 0-255;
4. paste the probabilities back (bicubic) into a full-image canvas and zero everything
   outside the tight box spanned by the points.

Coordinates are pixels, ``x`` right and ``y`` down; boxes are inclusive ``(x0, y0, x1, y1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import InputError

PAD = 50
SIGMA = 10.0
PAPER_RESOLUTION = 512


def as_points(points, image_shape: tuple[int, ...] | None = None, min_points: int = 4) -> np.ndarray:
    """Validate clicks and return them as an ``(N, 2)`` float64 array of ``(x, y)`` pixels.

    A point may sit anywhere inside the image, borders included (``0 <= x <= W - 1``);
    one further out is a user error, as is anything that is not ``min_points`` finite pairs.
    """
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"points must be numbers as (x, y) pairs: {exc}") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"points must be an (N, 2) array of (x, y) pairs, got shape {arr.shape}")
    if len(arr) < min_points:
        raise InputError(f"need at least {min_points} extreme points, got {len(arr)}")
    if not np.isfinite(arr).all():
        raise InputError("points must be finite numbers")
    if image_shape is not None:
        h, w = image_shape[:2]
        outside = (arr[:, 0] < 0) | (arr[:, 1] < 0) | (arr[:, 0] > w - 1) | (arr[:, 1] > h - 1)
        if outside.any():
            bad = ", ".join(f"({x:g}, {y:g})" for x, y in arr[outside])
            raise InputError(f"points outside the {w}x{h} image: {bad}")
    return arr


def points_box(points: np.ndarray, pad: int = 0) -> tuple[int, int, int, int]:
    """Inclusive integer box ``(x0, y0, x1, y1)`` around the points, grown by ``pad``.

    Points are truncated to whole pixels first, as the official code does.
    """
    p = np.asarray(points).astype(np.int64)
    return (int(p[:, 0].min()) - pad, int(p[:, 1].min()) - pad, int(p[:, 0].max()) + pad, int(p[:, 1].max()) + pad)


def _overlap(box, shape):
    """Slices of the box inside the image, and of the image inside the box."""
    x0, y0, x1, y1 = box
    h, w = shape[:2]
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if ix0 > ix1 or iy0 > iy1:
        return None
    image_sl = (slice(iy0, iy1 + 1), slice(ix0, ix1 + 1))
    crop_sl = (slice(iy0 - y0, iy1 - y0 + 1), slice(ix0 - x0, ix1 - x0 + 1))
    return image_sl, crop_sl


def crop_padded(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop ``image`` to the inclusive ``box``; parts outside the image are zeros."""
    x0, y0, x1, y1 = box
    crop = np.zeros((y1 - y0 + 1, x1 - x0 + 1) + image.shape[2:], dtype=image.dtype)
    sl = _overlap(box, image.shape)
    if sl is not None:
        crop[sl[1]] = image[sl[0]]
    return crop


def paste_padded(crop: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`crop_padded`: place ``crop`` into a zero canvas of ``shape``."""
    canvas = np.zeros(tuple(shape[:2]) + crop.shape[2:], dtype=crop.dtype)
    sl = _overlap(box, shape)
    if sl is not None:
        canvas[sl[0]] = crop[sl[1]]
    return canvas


def heatmap(points: np.ndarray, size: tuple[int, int], sigma: float = SIGMA) -> np.ndarray:
    """Max of one Gaussian per point at ``(x, y)``, rescaled to 0-255; ``size`` is ``(h, w)``.

    ``sigma`` is the full width at half maximum, as in the paper's ``make_gaussian``.
    """
    h, w = size
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    out = np.zeros((h, w), dtype=np.float64)
    k = -4.0 * np.log(2.0) / float(sigma) ** 2
    for x, y in np.asarray(points, dtype=np.float64):
        # A Gaussian is separable: the outer product of two 1-D ones, about 5x faster than the
        # exponential of every pixel's distance, with the same float32 heatmap.
        np.maximum(out, np.multiply.outer(np.exp(k * (ys - y) ** 2), np.exp(k * (xs - x) ** 2)), out=out)
    lo, hi = out.min(), out.max()
    return (255.0 * (out - lo) / (hi - lo + 1e-10)).astype(np.float32)


def crop_sigma(resolution: int, sigma: float | None = None) -> float:
    """The Gaussians' width at a working size: 10 px at 512, scaled with ``resolution``."""
    return SIGMA * resolution / PAPER_RESOLUTION if sigma is None else float(sigma)


def to_crop(points: np.ndarray, box: tuple[int, int, int, int], resolution: int) -> np.ndarray:
    """Image pixels -> integer pixels of the ``resolution``-sided crop of ``box``."""
    cw, ch = box[2] - box[0] + 1, box[3] - box[1] + 1
    # Integer arithmetic: truncates like the official code without float rounding surprises.
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return (pts.astype(np.int64) - [box[0], box[1]]) * resolution // [cw, ch]


def click_map(points: np.ndarray, resolution: int, sigma: float | None = None) -> np.ndarray:
    """Heatmap of clicks already in crop pixels, 0-255 float32; all zeros without clicks."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return np.zeros((resolution, resolution), np.float32)
    return heatmap(pts, (resolution, resolution), crop_sigma(resolution, sigma))


@dataclass(frozen=True)
class Crop:
    """Where a network input came from: the padded box and the clicked points."""

    box: tuple[int, int, int, int]  # padded box in image pixels, inclusive
    tight_box: tuple[int, int, int, int]  # box spanned by the points themselves
    image_shape: tuple[int, int]  # (h, w) of the full image
    resolution: int  # side of the square network input


def prepare_input(
    image: np.ndarray,
    points: np.ndarray,
    resolution: int = PAPER_RESOLUTION,
    pad: int = PAD,
    sigma: float | None = None,
) -> tuple[np.ndarray, Crop]:
    """Build the 4-channel network input (RGB 0-255 + heatmap 0-255), ``HxWx4`` float32.

    ``sigma`` defaults to 10 px at 512 and scales with ``resolution`` so that the Gaussians
    cover the same share of the crop at every working size.
    """
    sigma = crop_sigma(resolution, sigma)
    pts = np.asarray(points, dtype=np.float64)
    box = points_box(pts, pad)
    crop = crop_padded(image, box)
    resized = cv2.resize(crop, (resolution, resolution), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    hm = heatmap(to_crop(pts, box, resolution), (resolution, resolution), sigma)
    x = np.concatenate([resized, hm[:, :, None]], axis=2)
    return x, Crop(box=box, tight_box=points_box(pts, 0), image_shape=tuple(image.shape[:2]), resolution=resolution)


def paste_back(prob: np.ndarray, crop: Crop) -> np.ndarray:
    """Resize crop probabilities back to the box, paste into the image, zero outside the points' box."""
    x0, y0, x1, y1 = crop.box
    resized = cv2.resize(prob.astype(np.float32), (x1 - x0 + 1, y1 - y0 + 1), interpolation=cv2.INTER_CUBIC)
    full = paste_padded(np.clip(resized, 0.0, 1.0), crop.box, crop.image_shape)
    keep = np.zeros(crop.image_shape, dtype=bool)
    tx0, ty0, tx1, ty1 = crop.tight_box
    keep[max(ty0, 0) : ty1 + 1, max(tx0, 0) : tx1 + 1] = True
    full[~keep] = 0.0
    return full


def extreme_points(mask: np.ndarray, jitter: int = 0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Left-, right-, top- and bottom-most points of a mask, as a ``(4, 2)`` ``(x, y)`` array.

    With ``jitter`` > 0 each point is drawn at random among mask pixels within ``jitter``
    pixels of the true extreme (the official ``pert``), which simulates human clicks.
    Without it the choice among ties is the median pixel, so the result is deterministic.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise InputError("mask is empty: no extreme points")
    rng = rng if rng is not None else np.random.default_rng()
    candidates = (
        xs <= xs.min() + jitter,  # left
        xs >= xs.max() - jitter,  # right
        ys <= ys.min() + jitter,  # top
        ys >= ys.max() - jitter,  # bottom
    )
    out = np.empty((4, 2), dtype=np.int64)
    for i, sel in enumerate(candidates):
        idx = np.flatnonzero(sel)
        if jitter > 0:
            j = idx[rng.integers(len(idx))]
        else:
            order = np.argsort(ys[idx] if i < 2 else xs[idx], kind="stable")
            j = idx[order[len(order) // 2]]
        out[i] = (xs[j], ys[j])
    return out


def box_points(box, width: int, height: int) -> np.ndarray:
    """A rectangle's side midpoints as stand-ins for the extreme points (left, right, top, bottom).

    Each side of a tight box touches the object somewhere along it; the midpoint is the best
    single guess of where. ``dextr-backend evaluate --clicks box`` measures what the guess costs.
    """
    x0, y0, x1, y1 = box
    x0, x1 = np.clip([x0, x1], 0, width - 1)
    y0, y1 = np.clip([y0, y1], 0, height - 1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([[x0, cy], [x1, cy], [cx, y0], [cx, y1]], dtype=np.float64)


def inside_box(points: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Which points (truncated to whole pixels) lie inside the inclusive ``box``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2).astype(np.int64)
    return (p[:, 0] >= box[0]) & (p[:, 0] <= box[2]) & (p[:, 1] >= box[1]) & (p[:, 1] <= box[3])


def correction_channels(
    crop: Crop, positives, negatives, previous: np.ndarray, sigma: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 3 channels a corrections network adds to the 4 of :func:`prepare_input`, ``SxSx3`` float32.

    Positive-click map, negative-click map (the extreme heatmap's Gaussian and point mapping) and
    ``previous`` (pass-1 probabilities in this crop, ``SxS``) x 255. Pass 2 uses pass 1's crop, so
    clicks outside its padded box cannot be shown to the network: they are dropped, and the
    positives and negatives kept are returned with the channels (image pixels).
    """
    pos = np.asarray(positives, dtype=np.float64).reshape(-1, 2)
    neg = np.asarray(negatives, dtype=np.float64).reshape(-1, 2)
    pos, neg = pos[inside_box(pos, crop.box)], neg[inside_box(neg, crop.box)]
    s = crop.resolution
    channels = np.stack(
        [
            click_map(to_crop(pos, crop.box, s), s, sigma),
            click_map(to_crop(neg, crop.box, s), s, sigma),
            np.asarray(previous, dtype=np.float32) * 255.0,
        ],
        axis=2,
    )
    return channels.astype(np.float32), pos, neg
