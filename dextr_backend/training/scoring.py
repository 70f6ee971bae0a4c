"""Scores of a predictor as ``evaluate`` computes them, on held-out objects and on a guard folder:
the mIoU the trainer picks its best epoch by, and the per-object, per-click-set IoU that
promotion pairs between two versions (``decision``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import numpy as np

from ..build import make_predictor, model_from
from ..data.objects import ObjectRef, as_eval_objects
from ..evaluation.runner import evaluate_objects
from ..predictor import DextrPredictor

# A corrections version is also scored after 2 corrective clicks on top of the 4 extreme points.
CORRECTION_CLICKS = 6
# Promotion scores each object with several click sets, as different people would click it: the
# exact extreme points, then sets jittered by up to CLICK_JITTER px (the paper's training jitter).
CLICK_SETS = 3
CLICK_JITTER = 5


def _miou(result, clicks: int | None = None) -> float:
    value = result.miou_by_clicks()[clicks] if clicks else result.miou
    return float(value) if value is not None else float("nan")


def score_objects(
    predictor: DextrPredictor,
    val_refs: Sequence[ObjectRef],
    guard_objects: Sequence | None,
    seed: int = 0,
    clicks: int | None = None,
) -> dict:
    """``val_miou`` and ``guard_miou`` (percent; None where there is nothing to score), as
    ``evaluate`` computes them; with ``clicks`` (e.g. 6) also ``val_miou_6`` and ``guard_miou_6``,
    the mIoU after that many clicks, from the same runs."""
    out = {}
    runs = {
        "val_miou": (as_eval_objects(list(val_refs)), seed) if val_refs else None,
        "guard_miou": (guard_objects, 0) if guard_objects else None,
    }
    for key, run in runs.items():
        result = (
            None
            if run is None
            else evaluate_objects(predictor, run[0], seed=run[1], progress=False, warmup=False, max_clicks=clicks or 4)
        )
        out[key] = None if result is None else _miou(result)
        if clicks:
            out[f"{key}_{clicks}"] = None if result is None else _miou(result, clicks)
    return out


def paired_scores(
    predictor: DextrPredictor,
    objects: Iterable,
    *,
    seed: int = 0,
    click_sets: int = CLICK_SETS,
    jitter: int = CLICK_JITTER,
    clicks: int | None = None,
) -> dict[int, np.ndarray]:
    """IoU in percent of every object under every click set, ``(objects, click_sets)``: key 4 holds
    the extreme points' masks, and with ``clicks`` (e.g. 6) key ``clicks`` the masks after the
    corrective clicks up to that count.

    Set 0 is the exact extreme points; set k is jittered, seeded by ``(seed + k, object index)``:
    two versions given the same objects in the same order see exactly the same clicks, so their
    scores pair object by object and click set by click set."""
    objects = list(objects)
    keys = [4] + ([clicks] if clicks else [])
    out = {key: np.zeros((len(objects), click_sets)) for key in keys}
    for k in range(click_sets if objects else 0):
        result = evaluate_objects(
            predictor,
            objects,
            jitter=jitter if k else 0,
            seed=seed + k,
            progress=False,
            warmup=False,
            max_clicks=clicks or 4,
        )
        # a model was given, so every row has its IoU, and its IoUs per click count when clicks > 4
        out[4][:, k] = [100.0 * cast(float, row.iou) for row in result.rows]
        if clicks:
            out[clicks][:, k] = [100.0 * cast("list[float]", row.ious)[clicks - 4] for row in result.rows]
    return out


def set_scores(
    predictor: DextrPredictor, object_sets: list, *, seed: int = 0, clicks: int | None = None
) -> list[dict | None]:
    """``paired_scores`` on each list of objects (an empty list or None gives None)."""
    return [paired_scores(predictor, objects, seed=seed, clicks=clicks) if objects else None for objects in object_sets]


def version_scores(
    arch: str,
    state: dict,
    size: int,
    threshold: float,
    trim: int,
    object_sets: list,
    *,
    seed: int = 0,
    device: str = "auto",
    clicks: int | None = None,
) -> list[dict | None]:
    """``set_scores`` of weights not yet a version, from a predictor that works as the version will:
    its size, threshold and trim."""
    predictor = make_predictor(model_from(arch, state), arch, size, threshold, trim, device=device)
    return set_scores(predictor, object_sets, seed=seed, clicks=clicks)


def validation_miou(predictor: DextrPredictor, refs: Sequence[ObjectRef], seed: int = 0) -> float:
    """mIoU (percent) with the exact extreme points of each object, as ``evaluate`` computes it."""
    return score_objects(predictor, refs, None, seed)["val_miou"]


def guard_miou(predictor: DextrPredictor, objects: Sequence) -> float:
    """mIoU (percent) on a guard folder's objects (loaded once by ``promotion.load_guard``)."""
    return score_objects(predictor, [], objects)["guard_miou"]


__all__ = [
    "CLICK_JITTER",
    "CLICK_SETS",
    "CORRECTION_CLICKS",
    "guard_miou",
    "paired_scores",
    "score_objects",
    "set_scores",
    "validation_miou",
    "version_scores",
]
