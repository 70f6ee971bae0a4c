"""What an evaluation measured: one row per object, and the summary numbers (mIoU, timing,
NoC@85/90, NoF@90, mIoU by click count) computed from the rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from .metrics import clicks_to_reach, mean_iou

FIRST_CLICKS = 4  # the extreme points (or box midpoints) count as 4 clicks
NOC_THRESHOLDS = (0.85, 0.90)


@dataclass
class ObjectResult:
    """One row of the per-object table; the model columns are ``None`` in baseline-only runs."""

    index: int
    image: str
    object: str
    points: np.ndarray  # (4, 2) int (x, y): the simulated clicks
    iou: float | None = None  # 0-1
    ms: float | None = None  # wall time of the predict call
    baseline_iou: float | None = None
    baseline_ms: float | None = None
    ious: list[float] | None = None  # with max_clicks > 4: IoU after 4, 5, ..., N clicks
    baseline_ious: list[float] | None = None
    correction_ms: float | None = None  # mean wall time of one corrected prediction

    def noc(self, threshold: float, baseline: bool = False) -> int | None:
        """Clicks to reach ``threshold`` (0-1), capped at the last click count."""
        values = self.baseline_ious if baseline else self.ious
        return None if values is None else clicks_to_reach(values, threshold, FIRST_CLICKS)


@dataclass
class Case:
    """What an overlay of one object needs; kept only for the worst few objects."""

    row: ObjectResult
    image: np.ndarray = field(repr=False)
    gt: np.ndarray = field(repr=False)
    ignore: np.ndarray = field(repr=False)
    pred: np.ndarray = field(repr=False)


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


@dataclass
class EvalResult:
    rows: list[ObjectResult]
    worst: list[Case] = field(default_factory=list, repr=False)  # lowest IoU first
    jitter: int = 0
    seed: int = 0
    baseline: str | None = None
    max_clicks: int = FIRST_CLICKS

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def miou(self) -> float | None:
        """Mean IoU in percent (0-100); ``None`` without a model."""
        return mean_iou(r.iou for r in self.rows)

    @property
    def ms_per_object(self) -> float | None:
        return _mean(r.ms for r in self.rows)

    @property
    def baseline_miou(self) -> float | None:
        return mean_iou(r.baseline_iou for r in self.rows)

    @property
    def baseline_ms_per_object(self) -> float | None:
        return _mean(r.baseline_ms for r in self.rows)

    def miou_by_clicks(self, baseline: bool = False) -> dict[int, float] | None:
        """mIoU (percent) after 4, 5, ..., ``max_clicks`` clicks; None without corrective clicks."""
        every = [r.baseline_ious if baseline else r.ious for r in self.rows]
        series = [s for s in every if s is not None]
        if self.max_clicks <= FIRST_CLICKS or not series:
            return None
        # ``series`` is not empty, so neither is any mean here.
        return {FIRST_CLICKS + i: cast(float, mean_iou(s[i] for s in series)) for i in range(len(series[0]))}

    def noc(self, threshold: float, baseline: bool = False) -> float | None:
        """Mean clicks per object to reach ``threshold`` (4 extreme points included, capped at N)."""
        every = [r.noc(threshold, baseline) for r in self.rows]
        counts = [c for c in every if c is not None]
        return float(np.mean(counts)) if counts and self.max_clicks > FIRST_CLICKS else None

    def nof(self, threshold: float, baseline: bool = False) -> int | None:
        """Objects still under ``threshold`` after ``max_clicks`` clicks."""
        series = [(r.baseline_ious if baseline else r.ious) for r in self.rows]
        finals = [f[-1] for f in series if f is not None]
        return sum(v < threshold for v in finals) if finals and self.max_clicks > FIRST_CLICKS else None

    @property
    def correction_ms(self) -> float | None:
        return _mean(r.correction_ms for r in self.rows)

    def click_summary(self, baseline: bool = False) -> dict:
        """NoC@85, NoC@90, NoF@90 and mIoU by click count (keys "4" ... "N"); empty at 4 clicks."""
        by = self.miou_by_clicks(baseline)
        if by is None:
            return {}
        pre = "baseline_" if baseline else ""
        # Series to count clicks on (``by``), so every NoC is a number.
        out: dict[str, Any] = {
            f"{pre}noc{round(100 * t)}": round(cast(float, self.noc(t, baseline)), 3) for t in NOC_THRESHOLDS
        }
        out[f"{pre}nof90"] = self.nof(0.90, baseline)
        out[f"{pre}miou_by_clicks"] = {str(k): round(v, 3) for k, v in by.items()}
        return out

    def summary(self) -> dict:
        def rnd(v, k):
            return None if v is None else round(v, k)

        out = {
            "miou": rnd(self.miou, 3),
            "n": self.n,
            "ms_per_object": rnd(self.ms_per_object, 2),
            "baseline": self.baseline,
            "baseline_miou": rnd(self.baseline_miou, 3),
            "baseline_ms_per_object": rnd(self.baseline_ms_per_object, 2),
            "jitter": self.jitter,
            "seed": self.seed,
        }
        if self.max_clicks > FIRST_CLICKS:
            out["max_clicks"] = self.max_clicks
            out["ms_per_correction"] = rnd(self.correction_ms, 2)
            out.update(self.click_summary())
            if self.baseline_miou is not None:
                out.update(self.click_summary(baseline=True))
        return out


def shown_iou(row: ObjectResult) -> float:
    """IoU of the mask an overlay shows: the model's (else the baseline's), after its last click."""
    if row.iou is not None:
        return row.ious[-1] if row.ious else row.iou
    # A row with no model IoU was scored by the baseline (``evaluate_objects`` runs one or both).
    return row.baseline_ious[-1] if row.baseline_ious else cast(float, row.baseline_iou)


__all__ = ["Case", "EvalResult", "FIRST_CLICKS", "NOC_THRESHOLDS", "ObjectResult", "shown_iou"]
