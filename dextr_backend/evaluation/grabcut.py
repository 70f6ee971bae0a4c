"""GrabCut (Rother et al. 2004) as the classic baseline: the box the 4 clicks span, nothing more.

It gets exactly the information DEXTR gets from the same clicks (their bounding box), so the
gap between the two is what the learned network adds. The box is enlarged by ``margin`` pixels
because GrabCut treats everything outside its rectangle as sure background, and the extreme
points lie on the object's own border.

Corrective clicks become sure-foreground or sure-background discs (``SEED_RADIUS``) in the
initial mask, and GrabCut runs again from scratch with every seed (stateless, like the network).
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import geometry
from ..imageio import as_rgb

MARGIN = 10
ITERATIONS = 5
SEED_RADIUS = 5


def grabcut_box(points: np.ndarray, shape: tuple[int, ...], margin: int = MARGIN) -> tuple[int, int, int, int]:
    """Inclusive ``(x0, y0, x1, y1)`` box around the points, enlarged by ``margin``, inside the image."""
    h, w = shape[:2]
    x0, y0, x1, y1 = geometry.points_box(np.asarray(points), margin)
    return max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)


def grabcut_baseline(
    image: np.ndarray,
    points,
    positives=(),
    negatives=(),
    *,
    margin: int = MARGIN,
    iterations: int = ITERATIONS,
    seed: int = 0,
) -> np.ndarray:
    """Bool mask from ``cv2.grabCut``: rectangle mode, or with corrective clicks a mask that is
    sure background outside the box, probable foreground inside and sure discs at the clicks.

    Where GrabCut cannot run (a box under 2 px on a side, or one covering the whole image so
    there is no background to learn from, and no click to tell) or fails, the box itself is the answer.
    """
    rgb = as_rgb(image)
    pts = geometry.as_points(points, rgb.shape, min_points=1)
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = grabcut_box(pts, rgb.shape, margin)
    box = np.zeros((h, w), dtype=bool)
    box[y0 : y1 + 1, x0 : x1 + 1] = True
    seeds = [(p, cv2.GC_FGD) for p in positives] + [(p, cv2.GC_BGD) for p in negatives]
    if x1 - x0 < 1 or y1 - y0 < 1 or (box.all() and not negatives):
        return box
    mask = np.where(box, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    for (x, y), label in seeds:
        cv2.circle(mask, (int(round(x)), int(round(y))), SEED_RADIUS, int(label), thickness=-1)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)  # GrabCut seeds its colour models with k-means: make runs repeatable
    try:
        if seeds:
            cv2.grabCut(  # type: ignore[call-overload]  # opencv stubs: rect may be None with GC_INIT_WITH_MASK
                cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK
            )
        else:
            cv2.grabCut(
                cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                mask,
                (x0, y0, x1 - x0 + 1, y1 - y0 + 1),
                bgd,
                fgd,
                iterations,
                cv2.GC_INIT_WITH_RECT,
            )
    except cv2.error:
        return box
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
