"""Where a user would click next to fix a mask: the standard corrective-click protocol.

The error is the missed object (false negatives) and the false object (false positives), leaving
out the benchmark's ignore band. The next click goes into the largest connected error region, at
its point farthest from the region's boundary: that is where a person clicks to fix the biggest
mistake without aiming at an edge. Ignore-band pixels and the image border count as boundary, so
a click never lands in the band. Positive if the region is missed object, negative otherwise.

Training uses the same rule, and for variety a random point among those at least half as far
from the boundary as the farthest one (``rng``), which is closer to how people click.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np


@dataclass(frozen=True)
class Click:
    x: int
    y: int
    positive: bool


def _largest_region(error: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The largest 8-connected region of ``error`` as a bool mask, and its area."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(error.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best, int(stats[best, cv2.CC_STAT_AREA])


def error_regions(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(missed object, false object)`` bool masks, both outside the ignore band."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    valid = ~np.asarray(ignore, dtype=bool) if ignore is not None else np.ones(gt.shape, bool)
    return gt & ~pred & valid, pred & ~gt & valid


def next_click(
    pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None, rng: np.random.Generator | None = None
) -> Click | None:
    """The next corrective click on ``pred`` against ``gt``; None when there is no error pixel.

    Without ``rng`` the deterministic protocol (the farthest point; ties go to the first pixel in
    row order); with it, a random point at least half the largest distance from the boundary.
    """
    missed, false = error_regions(pred, gt, ignore)
    m, f = _largest_region(missed), _largest_region(false)
    if m is None and f is None:
        return None
    # Ties in area go to the missed object: adding what is missing is the usual first fix.
    positive = f is None or (m is not None and m[1] >= f[1])
    # Not both None (returned above), and ``positive`` picks the one that is there.
    region = cast("tuple[np.ndarray, int]", m if positive else f)[0]
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    # One pixel of non-region around the box: the image border is boundary too.
    patch = np.pad(region[y0:y1, x0:x1], 1).astype(np.uint8)
    dist = cv2.distanceTransform(patch, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    if rng is None:
        flat = int(np.argmax(dist))
    else:
        candidates = np.flatnonzero(dist >= 0.5 * dist.max())
        flat = int(candidates[rng.integers(len(candidates))])
    cy, cx = divmod(flat, dist.shape[1])
    return Click(int(x0 + cx), int(y0 + cy), bool(positive))
