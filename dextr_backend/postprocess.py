"""Mask clean-up after thresholding, and masks as polygons.

The network sometimes lights up stray blobs elsewhere in the crop (a second similar object, a
textured patch); the user clicked one object, so blobs away from the clicks are dropped.
Annotation tools want polygons, so masks convert both ways, holes included (CVAT's port loses
them by keeping only external contours).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

# Extreme points sit on the object's boundary, so after thresholding a click may fall a pixel
# or two outside the mask it belongs to: a blob this close to a click still counts as clicked.
CLICK_RADIUS = 3


def keep_clicked_components(mask: np.ndarray, points: np.ndarray, radius: int = CLICK_RADIUS) -> np.ndarray:
    """Keep the 8-connected blobs that touch a click (within ``radius`` px); else the largest one."""
    mask = np.asarray(mask, dtype=bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:  # background plus at most one blob: nothing to choose
        return mask
    h, w = mask.shape
    near = np.zeros((h, w), dtype=np.uint8)
    for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        cv2.circle(near, (int(round(x)), int(round(y))), int(radius), 1, thickness=-1)
    hit = np.unique(labels[(near > 0) & mask])
    hit = hit[hit > 0]
    if len(hit) == 0:  # the largest; of equal ones the topmost, then leftmost (whatever the labels' order)
        blobs = stats[1:]
        order = np.lexsort((blobs[:, cv2.CC_STAT_LEFT], blobs[:, cv2.CC_STAT_TOP], -blobs[:, cv2.CC_STAT_AREA]))
        hit = [1 + int(order[0])]
    return np.isin(labels, hit)


def fill_small_holes(mask: np.ndarray, max_fraction: float) -> np.ndarray:
    """Fill background regions enclosed by the mask whose area is below ``max_fraction`` of the mask's.

    Enclosed means not 4-connected to the image border (the dual of the mask's 8-connectivity).
    """
    mask = np.asarray(mask, dtype=bool)
    if max_fraction <= 0 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    limit = max_fraction * mask.sum()
    small = [i for i in range(1, n) if i not in border and stats[i, cv2.CC_STAT_AREA] < limit]
    if not small:
        return mask
    return mask | np.isin(labels, small)


def trim_boundary(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Erode the mask by ``pixels`` (a disc); a mask the trim would erase is kept as it was."""
    mask = np.asarray(mask, dtype=bool)
    if pixels <= 0 or not mask.any():
        return mask
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    # Only the mask's box (plus the disc's reach) is eroded: a 12 MP photo costs the object, not the picture.
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
    y0, x0 = max(y - pixels, 0), max(x - pixels, 0)
    y1, x1 = min(y + h + pixels, mask.shape[0]), min(x + w + pixels, mask.shape[1])
    trimmed = np.zeros_like(mask)
    trimmed[y0:y1, x0:x1] = cv2.erode(mask[y0:y1, x0:x1].astype(np.uint8), disc).astype(bool)
    return trimmed if trimmed.any() else mask


@dataclass(frozen=True)
class PostProcess:
    """What the predictor does to a thresholded mask; the defaults are set from evaluations."""

    keep_connected: bool = True
    max_hole_fraction: float = 0.05  # chosen on BSDS500 validation (benchmarks/postprocess.py): +0.07 mIoU
    # Pixels eroded off the boundary first: a weights version carries its own (``Version.trim``),
    # tuned with its threshold, for a network whose masks come out slightly too wide.
    trim: int = 0

    def __call__(self, mask: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The steps below, on the mask's box plus a margin: the same result as on the whole picture
        (all background outside the box, connected to its border), for the object's cost alone."""
        mask = np.asarray(mask, dtype=bool)
        x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
        if w == 0 or h == 0:
            return mask
        margin = self.trim + 1
        y0, x0 = max(y - margin, 0), max(x - margin, 0)
        y1, x1 = min(y + h + margin, mask.shape[0]), min(x + w + margin, mask.shape[1])
        out = np.zeros_like(mask)
        # Rounded before they move: round-half-to-even of x - x0 is not always round(x) - x0.
        clicks = np.round(np.asarray(points if points is not None else (), np.float64).reshape(-1, 2)) - [x0, y0]
        out[y0:y1, x0:x1] = self._steps(mask[y0:y1, x0:x1], clicks)
        return out

    def _steps(self, mask: np.ndarray, points: np.ndarray) -> np.ndarray:
        if self.trim > 0:
            mask = trim_boundary(mask, self.trim)
        if self.keep_connected:
            mask = keep_clicked_components(mask, points)
        if self.max_hole_fraction > 0:
            mask = fill_small_holes(mask, self.max_hole_fraction)
        return mask


@dataclass
class Polygon:
    """One outer boundary and its holes, each a ``(K, 2)`` float array of ``(x, y)`` pixels."""

    exterior: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)


def _contour_xy(contour: np.ndarray) -> np.ndarray:
    return contour.reshape(-1, 2).astype(np.float64)


def _pixel_area(contour: np.ndarray) -> float:
    """Pixels covered by a region from its unsimplified boundary (Pick's theorem).

    The polygon's own area misses half the boundary pixels, so a 1-px line (area 0) would
    count as nothing.
    """
    return cv2.contourArea(contour) + len(contour) / 2 + 1


def _hole_boundary(mask: np.ndarray, contour: np.ndarray) -> np.ndarray | None:
    """Boundary of the background pixels inside a hole contour, traced on those pixels.

    OpenCV traces a hole along the mask pixels around it, cutting corners diagonally; once
    simplified, such a polygon no longer matches the hole, so trace the hole itself instead.
    """
    x, y, w, h = cv2.boundingRect(contour)
    inside = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(inside, [contour - np.array([x, y], dtype=contour.dtype)], 1)
    inside &= mask[y : y + h, x : x + w] == 0
    found, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE, offset=(x, y))
    return max(found, key=len) if found else None


def mask_to_polygons(mask: np.ndarray, *, epsilon: float = 1.0, min_area: float = 4.0) -> list[Polygon]:
    """Outer boundaries with their holes, simplified by ``epsilon`` px; pieces under ``min_area`` pixels dropped.

    Vertices are pixel centres: an exterior runs on the mask's outermost pixels, a hole on the
    hole's outermost pixels, so :func:`polygons_to_mask` gives the mask back exactly when
    ``epsilon`` is 0. Objects inside holes come out as polygons of their own.
    """
    m = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8))
    if m.ndim != 2 or not m.any():
        return []
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    hierarchy = hierarchy[0]  # rows: next, previous, first child, parent

    def simplify(c):
        return _contour_xy(cv2.approxPolyDP(c, epsilon, True) if epsilon > 0 else c)

    polygons = []
    for i, c in enumerate(contours):
        if hierarchy[i][3] != -1 or _pixel_area(c) < min_area:  # holes are handled with their parent
            continue
        holes = []
        child = hierarchy[i][2]
        while child != -1:
            hole = _hole_boundary(m, contours[child])
            if hole is not None and _pixel_area(hole) >= min_area:
                holes.append(simplify(hole))
            child = hierarchy[child][0]
        polygons.append(Polygon(exterior=simplify(c), holes=holes))
    return polygons


def polygons_to_json(polygons: list[Polygon]) -> list[dict]:
    """Plain lists for JSON: ``[{"exterior": [[x, y], ...], "holes": [[[x, y], ...], ...]}, ...]``."""
    return [
        {
            "exterior": np.asarray(p.exterior, dtype=float).tolist(),
            "holes": [np.asarray(h, dtype=float).tolist() for h in p.holes],
        }
        for p in polygons
    ]


def polygons_to_mask(polygons: list[Polygon], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise polygons into a bool ``shape`` mask: fill each exterior, then cut its holes.

    Vertices are pixel centres and filling includes the polygon's edges, as in
    :func:`mask_to_polygons`. Polygons are drawn one by one so that one's hole does not
    erase another polygon lying inside it.
    """
    out = np.zeros(tuple(shape[:2]), dtype=np.uint8)
    for p in polygons:
        piece = np.zeros_like(out)
        ext = np.round(np.asarray(p.exterior, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(piece, [ext], 1)
        for h in p.holes:
            hole = np.round(np.asarray(h, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
            cv2.fillPoly(piece, [hole], 0)
        out |= piece
    return out.astype(bool)
