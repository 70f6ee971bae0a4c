"""Simulated clicks, prediction, timing and IoU over a set of objects.

Clicks are simulated from the ground truth with a generator seeded by ``(seed, object index)``,
so two models evaluated with the same seed see exactly the same points, whatever runs between.

With ``max_clicks`` above 4, each method then gets corrective clicks one at a time, each placed
by the protocol of ``clicks.next_click`` on that method's own current mask, and its IoU is kept
after every click count. A predictor serves each count as a fresh request would: pass 1 from the
extreme points (computed once and reused, as it does not depend on the corrections), then one
pass with all the corrective clicks so far.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sized
from typing import Any, cast

import numpy as np

from .. import geometry
from ..errors import InputError
from ..imageio import read_image
from .clicks import next_click
from .grabcut import grabcut_baseline
from .metrics import iou, mean_iou
from .results import FIRST_CLICKS, Case, EvalResult, ObjectResult, shown_iou

CLICK_MODES = ("extreme", "box")
MaskFn = Callable[[np.ndarray, np.ndarray], Any]
BASELINES: dict[str, MaskFn] = {"grabcut": grabcut_baseline}


def _as_mask_fn(fn) -> MaskFn | None:
    """Accept a predictor (``.predict``) or a callable returning a mask or a ``Prediction``."""
    if fn is None:
        return None
    call = fn if callable(fn) else getattr(fn, "predict", None)
    if call is None:
        raise InputError(f"cannot predict with {type(fn).__name__}: need a callable or an object with .predict")

    def mask_fn(image, points):
        out = call(image, points)
        return np.asarray(getattr(out, "mask", out), dtype=bool)

    return mask_fn


def _as_baseline(baseline) -> tuple[str | None, MaskFn | None]:
    if baseline is None or callable(baseline):
        return (getattr(baseline, "__name__", "custom") if baseline else None), baseline
    try:
        return baseline, BASELINES[baseline]
    except KeyError:
        raise InputError(f"unknown baseline {baseline!r}; known: {', '.join(BASELINES)}") from None


def _timed(fn: MaskFn, image, points) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    mask = fn(image, points)
    return mask, (time.perf_counter() - start) * 1000.0


class _Session:
    """One method answering clicks on one object: the extreme points first, then corrections.

    A predictor keeps its pass-1 result and adds corrections with ``correct`` (what a fresh
    request with the same clicks computes); any other callable is called again with
    ``fn(image, points, positives=..., negatives=...)``.
    """

    def __init__(self, fn):
        self.call = fn if callable(fn) else fn.predict
        self.correct = getattr(fn, "correct", None)

    def first(self, image, points) -> tuple[np.ndarray, Any]:
        out = self.call(image, points)
        return np.asarray(getattr(out, "mask", out), dtype=bool), out

    def more(self, image, points, state, positives, negatives) -> np.ndarray:
        if self.correct is not None:
            out = self.correct(image, state, positives, negatives)
        else:
            out = self.call(image, points, positives=positives, negatives=negatives)
        return np.asarray(getattr(out, "mask", out), dtype=bool)


def click_series(
    session: _Session, image, points, gt, ignore, max_clicks: int
) -> tuple[list[float], np.ndarray, float, float | None]:
    """IoU after 4, 5, ..., ``max_clicks`` clicks, each corrective click placed on the method's own
    mask; also the final mask, the first call's and the mean corrected call's milliseconds."""
    start = time.perf_counter()
    mask, state = session.first(image, points)
    first_ms = (time.perf_counter() - start) * 1000.0
    ious = [iou(mask, gt, ignore)]
    positives: list[tuple[int, int]] = []
    negatives: list[tuple[int, int]] = []
    times: list[float] = []
    for _ in range(FIRST_CLICKS + 1, max_clicks + 1):
        click = next_click(mask, gt, ignore)
        if click is None:  # nothing left to fix: the mask stays as it is
            ious.append(ious[-1])
            continue
        (positives if click.positive else negatives).append((click.x, click.y))
        start = time.perf_counter()
        mask = session.more(image, points, state, list(positives), list(negatives))
        times.append((time.perf_counter() - start) * 1000.0)
        ious.append(iou(mask, gt, ignore))
    return ious, mask, first_ms, (float(np.mean(times)) if times else None)


def evaluate_objects(
    predict_fn,
    objects: Iterable,
    *,
    jitter: int = 0,
    seed: int = 0,
    baseline=None,
    progress: bool = True,
    keep_worst: int = 0,
    warmup: bool = True,
    total: int | None = None,
    clicks: str = "extreme",
    max_clicks: int = FIRST_CLICKS,
) -> EvalResult:
    """Click, predict and score every object; returns per-object rows and the summary.

    ``predict_fn``: a :class:`~dextr_backend.predictor.DextrPredictor`, or ``fn(image, points)``
    returning a bool mask or a ``Prediction``; ``None`` scores the baseline alone.
    ``objects``: :class:`~dextr_backend.data.benchmarks.EvalObject` items (anything with ``image_path``, ``object_id``,
    ``mask``, ``ignore`` and optionally a decoded ``image``).
    ``baseline``: ``"grabcut"`` or ``fn(image, points) -> mask``, run on the same clicks.
    ``keep_worst``: keep images and masks of this many lowest-IoU objects for overlays.
    ``warmup``: one untimed call first, so one-off start-up costs do not count as speed.
    ``clicks``: ``extreme`` (the 4 extreme points) or ``box`` (the tight box's side midpoints,
    which is what a Label Studio rectangle becomes).
    ``max_clicks``: above 4, add corrective clicks up to this count (see the module docstring);
    a callable (model or baseline) then also gets ``positives=`` and ``negatives=`` keywords.
    """
    _check_options(clicks, jitter, max_clicks)
    model, baseline_name, base = _methods(predict_fn, baseline)
    if total is None:
        total = len(cast(Sized, objects)) if hasattr(objects, "__len__") else getattr(objects, "size_hint", None)

    rows: list[ObjectResult] = []
    worst: list[Case] = []
    images = _Pictures()
    bar = _progress_bar(total, progress)
    try:
        for index, obj in enumerate(objects):
            row, image, mask, ignore, shown = _score_one(
                index, obj, images, predict_fn, model, base, clicks, jitter, seed, warmup, max_clicks
            )
            rows.append(row)
            if keep_worst > 0:
                # ``_methods`` gave a model or a baseline (or both): one of them drew ``shown``.
                worst.append(Case(row, image, mask, ignore, cast(np.ndarray, shown)))
                if len(worst) > 2 * keep_worst:  # cut back now and then: only the lowest are kept
                    worst = _lowest(worst, keep_worst)
            bar.set_postfix_str(_postfix(rows), refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return EvalResult(rows, _lowest(worst, keep_worst), jitter, seed, baseline_name, max_clicks)


def _progress_bar(total: int | None, shown: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc="evaluate",
        unit="obj",
        file=sys.stderr,
        disable=not shown,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def _score_one(
    index: int, obj, images, predict_fn, model, base, clicks: str, jitter: int, seed: int, warmup: bool, max_clicks: int
):
    """One object clicked and answered by the model and the baseline: its row, its picture and
    truth, and the mask to show for it (the model's, else the baseline's)."""
    image = images.of(obj)
    mask, ignore = _ground_truth(obj, image)
    points = _simulated_clicks(mask, clicks, jitter, np.random.default_rng((seed, index)))
    row = ObjectResult(index, str(getattr(obj, "image_name", obj.image_path)), str(obj.object_id), points)
    shown = None
    if model is not None:
        if warmup and index == 0:
            model(image, points)
        row.iou, row.ious, shown, row.ms, row.correction_ms = _answer(
            predict_fn, model, image, points, mask, ignore, max_clicks
        )
    if base is not None:
        row.baseline_iou, row.baseline_ious, base_pred, row.baseline_ms, _ = _answer(
            base, base, image, points, mask, ignore, max_clicks
        )
        shown = base_pred if shown is None else shown
    return row, image, mask, ignore, shown


def _check_options(clicks: str, jitter: int, max_clicks: int) -> None:
    """Refuse impossible settings before any picture is read."""
    if clicks not in CLICK_MODES:
        raise InputError(f"clicks must be one of {', '.join(CLICK_MODES)}, got {clicks!r}")
    if jitter < 0:
        raise InputError(f"jitter must be 0 or more pixels, got {jitter}")
    if max_clicks < FIRST_CLICKS:
        raise InputError(f"max_clicks counts the 4 extreme points: it must be 4 or more, got {max_clicks}")


def _methods(predict_fn, baseline) -> tuple[MaskFn | None, str | None, MaskFn | None]:
    """The model's mask function, and the baseline's name and function: at least one of them."""
    model = _as_mask_fn(predict_fn)
    baseline_name, base = _as_baseline(baseline)
    if model is None and base is None:
        raise InputError("nothing to evaluate: give a model, a baseline or both")
    return model, baseline_name, base


class _Pictures:
    """The picture of each object: its decoded ``image`` when it carries one, else read from disk,
    once for a run of objects on the same picture."""

    def __init__(self):
        self.path, self.image = None, None

    def of(self, obj) -> np.ndarray:
        image = getattr(obj, "image", None)
        if image is not None:
            return image
        if obj.image_path != self.path:
            self.path, self.image = obj.image_path, read_image(obj.image_path)
        return self.image


def _ground_truth(obj, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object's mask and ignore region as booleans, refused when they do not fit its picture."""
    mask, ignore = np.asarray(obj.mask, dtype=bool), np.asarray(obj.ignore, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise InputError(
            f"{obj.image_path}: mask {obj.object_id} is {mask.shape[1]}x{mask.shape[0]} "
            f"but the picture is {image.shape[1]}x{image.shape[0]}"
        )
    return mask, ignore


def _simulated_clicks(mask: np.ndarray, clicks: str, jitter: int, rng: np.random.Generator) -> np.ndarray:
    """The 4 points a user would give: the extreme points, or the midpoints of their box's sides."""
    points = geometry.extreme_points(mask, jitter, rng)
    if clicks == "box":
        points = geometry.box_points(geometry.points_box(points), mask.shape[1], mask.shape[0])
    return points


def _answer(
    method, mask_fn: MaskFn, image, points, gt, ignore, max_clicks: int
) -> tuple[float, list[float] | None, np.ndarray, float, float | None]:
    """One method's IoU on the object, its IoU after each click count (None with the 4 points
    alone), its final mask, and the milliseconds of its first and of a corrected call. ``method``
    as given answers corrective clicks (``_Session``); ``mask_fn`` wraps it for the 4 points alone."""
    if max_clicks > FIRST_CLICKS:
        ious, mask, first_ms, correction_ms = click_series(_Session(method), image, points, gt, ignore, max_clicks)
        return ious[0], ious, mask, first_ms, correction_ms
    mask, ms = _timed(mask_fn, image, points)
    return iou(mask, gt, ignore), None, mask, ms, None


def _score(case: Case) -> float:
    return shown_iou(case.row)


def _lowest(cases: list[Case], k: int) -> list[Case]:
    return sorted(cases, key=lambda c: (_score(c), c.row.index))[:k]


def _postfix(rows: list[ObjectResult]) -> str:
    parts = []
    m = mean_iou(r.iou for r in rows)
    if m is not None:
        parts.append(f"mIoU {m:.1f}")
    last = mean_iou(r.ious[-1] for r in rows if r.ious)
    if last is not None:
        # Every row has a series when one has (same method, same max_clicks).
        parts.append(f"after {FIRST_CLICKS + len(cast(list, rows[0].ious)) - 1} clicks {last:.1f}")
    b = mean_iou(r.baseline_iou for r in rows)
    if b is not None:
        parts.append(f"baseline {b:.1f}")
    return ", ".join(parts)
