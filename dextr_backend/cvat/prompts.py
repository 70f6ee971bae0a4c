"""CVAT's prompts (positive and negative clicks, an optional box) in pixels, for the rule that
decides which click is what (:mod:`dextr_backend.service.prompts`, the same for every tool).

CVAT measures in continuous image coordinates, so a click on the right or bottom edge of the
frame can read ``x == W`` or ``y == H``: coordinates up to one pixel past the last pixel are
pulled in to it; anything further out is a user error.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..service.prompts import Prompt

EDGE_TOLERANCE = 1.0  # pixels past the last row/column still accepted (CVAT's x == W)


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
    outside = (
        (arr[:, 0] < -EDGE_TOLERANCE)
        | (arr[:, 1] < -EDGE_TOLERANCE)
        | (arr[:, 0] > width - 1 + EDGE_TOLERANCE)
        | (arr[:, 1] > height - 1 + EDGE_TOLERANCE)
    )
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


def cvat_prompt(pos_points, neg_points, box, width: int, height: int) -> Prompt | None:
    """One object's :class:`Prompt` from CVAT's clicks and box, or None while they are not enough."""
    return Prompt.from_clicks(
        pixel_points(pos_points, width, height, "positive point"),
        pixel_points(neg_points, width, height, "negative point"),
        pixel_box(box, width, height),
        width=width,
        height=height,
    )
