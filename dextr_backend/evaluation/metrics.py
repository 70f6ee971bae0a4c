"""Intersection over union, the score every interactive-segmentation benchmark reports.

Pixels in the ignore band (GrabCut's unknown 128 ring) count neither as hits nor as misses:
the annotators themselves could not say which side of the boundary they belong to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import InputError


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU in ``[0, 1]`` of two boolean masks, outside ``ignore``; two empty masks score 1."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise InputError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != gt.shape:
            raise InputError(f"ignore mask {ignore.shape} and ground truth {gt.shape} differ in shape")
        valid = ~ignore
        pred, gt = pred & valid, gt & valid
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def mean_iou(values: Iterable[float | None]) -> float | None:
    """Mean of per-object IoUs as a percentage (0-100), ``None`` when there are none."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return float(arr.mean() * 100.0) if arr.size else None


def clicks_to_reach(ious: Sequence[float], threshold: float, first: int = 4) -> int:
    """Clicks needed to reach ``threshold`` (0-1), where ``ious[i]`` is the IoU after ``first + i``
    clicks; an object that never reaches it counts the last click count (NoC's cap)."""
    for i, value in enumerate(ious):
        if value >= threshold:
            return first + i
    return first + len(ious) - 1
