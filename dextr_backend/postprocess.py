"""Mask clean-up after thresholding, and masks as polygons. (Being written; see tests.)"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PostProcess:
    keep_connected: bool = True
    max_hole_fraction: float = 0.0

    def __call__(self, mask: np.ndarray, points: np.ndarray) -> np.ndarray:
        return mask
