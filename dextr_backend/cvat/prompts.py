"""CVAT prompts (positive and negative clicks, an optional box) to the four extreme points DEXTR
needs, and the corrective clicks after them.

CVAT measures in continuous image coordinates, so a click on the right or bottom edge of the
frame can read ``x == W`` or ``y == H``: coordinates up to one pixel past the last pixel are
pulled in to it; anything further out is a user error.

The rule, shared by the native function and the nuclio function:

1. four or more positive points are the extreme points (a box, if any, is then not needed);
2. with fewer points and a box, the box's side midpoints stand in for the extreme points
   (:func:`dextr_backend.geometry.box_points`), and each click replaces the midpoint of the
   box side it lies nearest to: draw a box, look at the mask, then click the true left-most
   point to correct it;
3. fewer than four points and no box: not enough to segment (``None``);
4. positive points after the fourth, and every negative point, are corrective clicks: versions
   that take corrections (``lite0c``, ``lite0h``) fix the mask with them in a second pass; others
   ignore them and log so.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..geometry import box_points

EDGE_TOLERANCE = 1.0   # pixels past the last row/column still accepted (CVAT's x == W)


def pixel_points(points, width: int, height: int, what: str = "point") -> np.ndarray:
    """Validate ``[[x, y], ...]`` and return an ``(N, 2)`` float array inside the image."""
    if points is None:
        return np.zeros((0, 2))
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what}s must be a list of [x, y] number pairs") from None
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{what}s must be a list of [x, y] number pairs, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{what} coordinates must be finite numbers")
    outside = ((arr[:, 0] < -EDGE_TOLERANCE) | (arr[:, 1] < -EDGE_TOLERANCE)
               | (arr[:, 0] > width - 1 + EDGE_TOLERANCE) | (arr[:, 1] > height - 1 + EDGE_TOLERANCE))
    if outside.any():
        bad = ", ".join(f"({x:g}, {y:g})" for x, y in arr[outside])
        raise InputError(f"{what}s outside the {width}x{height} image: {bad}")
    arr[:, 0] = np.clip(arr[:, 0], 0, width - 1)
    arr[:, 1] = np.clip(arr[:, 1], 0, height - 1)
    return arr


def pixel_box(box, width: int, height: int) -> tuple[float, float, float, float] | None:
    """``((x1, y1), (x2, y2))`` or ``[x1, y1, x2, y2]`` to an ordered box clipped to the image."""
    if box is None:
        return None
    try:
        arr = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError("the box must be [[x1, y1], [x2, y2]]") from None
    if arr.size == 0:
        return None
    if arr.size != 4 or not np.isfinite(arr).all():
        raise InputError("the box must be [[x1, y1], [x2, y2]] with finite numbers")
    x0, x1 = sorted(arr[[0, 2]])
    y0, y1 = sorted(arr[[1, 3]])
    if x1 < 0 or y1 < 0 or x0 > width - 1 + EDGE_TOLERANCE or y0 > height - 1 + EDGE_TOLERANCE:
        raise InputError(f"the box ({x0:g}, {y0:g})-({x1:g}, {y1:g}) lies outside the {width}x{height} image")
    x0, x1 = np.clip([x0, x1], 0, width - 1)
    y0, y1 = np.clip([y0, y1], 0, height - 1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise InputError("the box needs a width and height of at least one pixel")
    return float(x0), float(y0), float(x1), float(y1)


def extreme_clicks(pos_points, box, width: int, height: int) -> np.ndarray | None:
    """The extreme points to segment from, by the rule in the module docstring, or None."""
    return _extremes(pixel_points(pos_points, width, height, "positive point"), box, width, height)


def _extremes(points: np.ndarray, box, width: int, height: int) -> np.ndarray | None:
    """:func:`extreme_clicks` for positive points already checked by :func:`pixel_points`."""
    if len(points) >= 4:
        return points
    rect = pixel_box(box, width, height)
    if rect is None:
        return None
    stand_ins = box_points(rect, width, height)          # left, right, top, bottom
    x0, y0, x1, y1 = rect
    for x, y in points:                                  # later clicks win
        side = int(np.argmin([abs(x - x0), abs(x - x1), abs(y - y0), abs(y - y1)]))
        stand_ins[side] = (x, y)
    return stand_ins


def object_clicks(pos_points, neg_points, box, width: int, height: int):
    """``(extreme points, positive corrections, negative corrections)`` for one object, by the rule
    in the module docstring, or None when the prompts are not enough yet."""
    negatives = pixel_points(neg_points, width, height, "negative point")
    positives = pixel_points(pos_points, width, height, "positive point")
    points = _extremes(positives, box, width, height)
    if points is None:
        return None
    extra = positives[4:] if len(positives) >= 4 else np.zeros((0, 2))
    return points[:4], extra, negatives
