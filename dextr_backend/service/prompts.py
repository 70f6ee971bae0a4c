"""What one object is segmented from, whichever tool sent it: the extreme points, then the
corrective clicks. One rule turns clicks, a box, or a box with clicks into a :class:`Prompt`, so
Label Studio, CVAT's native function and its nuclio function answer the same clicks alike:

1. four or more positive clicks: the first four are the extreme points (a box is then not needed);
2. fewer, and a box: the box's side midpoints stand in for the extreme points
   (:func:`dextr_backend.geometry.box_points`);
3. fewer, and no box: not enough to segment yet (``None``);
4. every other click corrects: positives after the extreme points (all of them when a box stands
   in) and every negative. Versions that take corrections fix the mask with them; the others
   ignore them and log so.

The tools parse their own coordinates (percent, continuous pixels) into pixels of the image
first; this module only decides which click is what.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import box_points


def _pixels(points) -> np.ndarray:
    return np.asarray(points if points is not None else (), dtype=np.float64).reshape(-1, 2)


@dataclass(frozen=True)
class Prompt:
    """One object's prompt, in pixels of its image: ``extreme_points`` (4, 2), then ``positives``
    (N, 2) and ``negatives`` (M, 2), the corrective clicks."""

    extreme_points: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray

    @classmethod
    def from_clicks(cls, positives=(), negatives=(), box=None, *, width: int, height: int) -> Prompt | None:
        """The rule of the module docstring. ``box`` is ``(x0, y0, x1, y1)`` in pixels or None;
        ``width`` and ``height`` are the image's (the box's stand-ins stay inside it)."""
        pos, neg = _pixels(positives), _pixels(negatives)
        if len(pos) >= 4:
            return cls(pos[:4], pos[4:], neg)
        if box is None:
            return None
        return cls(box_points(box, width, height), pos, neg)

    @property
    def corrections(self) -> int:
        return len(self.positives) + len(self.negatives)
