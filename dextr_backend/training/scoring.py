"""Scores of a predictor as ``evaluate`` computes them, on held-out objects and on a guard folder:
what the trainer picks its best epoch by and what promotion compares two versions on."""

from __future__ import annotations

from typing import Sequence

from ..data.objects import ObjectRef, as_eval_objects
from ..evaluation.runner import evaluate_objects
from ..predictor import DextrPredictor

# A corrections version is also scored after 2 corrective clicks on top of the 4 extreme points.
CORRECTION_CLICKS = 6


def _miou(result, clicks: int | None = None) -> float:
    value = result.miou_by_clicks()[clicks] if clicks else result.miou
    return float(value) if value is not None else float("nan")


def score_objects(predictor: DextrPredictor, val_refs: Sequence[ObjectRef], guard_objects: Sequence | None,
                  seed: int = 0, clicks: int | None = None) -> dict:
    """``val_miou`` and ``guard_miou`` (percent; None where there is nothing to score), as
    ``evaluate`` computes them; with ``clicks`` (e.g. 6) also ``val_miou_6`` and ``guard_miou_6``,
    the mIoU after that many clicks, from the same runs."""
    out = {}
    runs = {"val_miou": (as_eval_objects(list(val_refs)), seed) if val_refs else None,
            "guard_miou": (guard_objects, 0) if guard_objects else None}
    for key, run in runs.items():
        result = None if run is None else evaluate_objects(predictor, run[0], seed=run[1], progress=False,
                                                           warmup=False, max_clicks=clicks or 4)
        out[key] = None if result is None else _miou(result)
        if clicks:
            out[f"{key}_{clicks}"] = None if result is None else _miou(result, clicks)
    return out


def validation_miou(predictor: DextrPredictor, refs: Sequence[ObjectRef], seed: int = 0) -> float:
    """mIoU (percent) with the exact extreme points of each object, as ``evaluate`` computes it."""
    return score_objects(predictor, refs, None, seed)["val_miou"]


def guard_miou(predictor: DextrPredictor, objects: Sequence) -> float:
    """mIoU (percent) on a guard folder's objects (loaded once by ``promotion.load_guard``)."""
    return score_objects(predictor, [], objects)["guard_miou"]


__all__ = ["CORRECTION_CLICKS", "guard_miou", "score_objects", "validation_miou"]
