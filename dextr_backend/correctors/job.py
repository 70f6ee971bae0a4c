"""What every corrector is given, and the click-consistency step they may share."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Pixels around a click that click consistency puts on the click's side: the radius a person's
# click covers at the crop's working size (384 px), small enough to leave the rest of the mask alone.
CONSISTENT_RADIUS = 3
MIN_REACH = 24  # the smallest window radius around a click, crop pixels
REACH_FACTOR = 2.5  # window radius = this x the click's distance to pass 1's mask boundary


@dataclass
class CorrectionJob:
    """One object's pass 2, in pass 1's crop (``S x S``)."""

    inputs: np.ndarray  # (S, S, 4) float32: RGB 0-255 and the extreme-point heatmap 0-255
    previous: np.ndarray  # (S, S) float32: pass 1's probabilities
    positives: np.ndarray  # (P, 2) float: corrective clicks on the object, crop pixels (x, y)
    negatives: np.ndarray  # (N, 2) float: corrective clicks off the object

    @property
    def size(self) -> int:
        return int(self.previous.shape[0])

    def rgb(self) -> np.ndarray:
        """The crop as uint8 RGB."""
        return np.clip(self.inputs[..., :3], 0, 255).astype(np.uint8)


def click_disc(clicks: np.ndarray, size: int, radius: int) -> np.ndarray:
    """A bool ``(size, size)`` mask of discs of ``radius`` around the clicks."""
    out = np.zeros((size, size), np.uint8)
    for x, y in np.asarray(clicks, np.float64).reshape(-1, 2):
        cv2.circle(out, (int(round(x)), int(round(y))), int(radius), 1, thickness=-1)
    return out.astype(bool)


def make_consistent(
    prob: np.ndarray, job: CorrectionJob, threshold: float, radius: int = CONSISTENT_RADIUS
) -> np.ndarray:
    """``prob`` with every clicked pixel (and a small disc around it) on its click's side of
    ``threshold`` (where a positive and a negative disc overlap, the negative wins)."""
    out = np.array(prob, dtype=np.float32, copy=True)
    high, low = max(threshold, 0.5) + 0.5 * (1 - max(threshold, 0.5)), 0.5 * min(threshold, 0.5)
    out[click_disc(job.positives, job.size, radius) & (out <= threshold)] = high
    out[click_disc(job.negatives, job.size, radius) & (out > threshold)] = low
    return out


def click_windows(job: CorrectionJob, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a training-free corrector may change pass 1's mask, for the positive and for the
    negative clicks: a disc around each click whose radius grows with how deep the click lies in
    the error it corrects (its distance to pass 1's mask boundary), so a click in the middle of a
    large wrong region may fix all of it, and a click near an edge only that edge. Why: a method
    that redraws the whole mask ruins the parts that were already right."""
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    windows = []
    for clicks in (job.positives, job.negatives):
        out = np.zeros(mask.shape, np.uint8)
        for x, y in np.asarray(clicks, np.float64).reshape(-1, 2):
            xi, yi = int(np.clip(round(x), 0, job.size - 1)), int(np.clip(round(y), 0, job.size - 1))
            depth = max(inside[yi, xi], outside[yi, xi])
            cv2.circle(out, (xi, yi), int(max(MIN_REACH, REACH_FACTOR * depth)), 1, thickness=-1)
        windows.append(out.astype(bool))
    return windows[0], windows[1]
