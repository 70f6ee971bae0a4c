"""``--out DIR``: the evaluation as files a person can look at and a script can read.

* ``objects.csv``: one row per object (IoU 0-1, milliseconds, the clicks as JSON; with corrective
  clicks also the clicks each method needed to reach 85 % and 90 % and its IoU after every click);
* ``iou_histogram.png``: objects per IoU decile, model and baseline side by side;
* ``clicks.png`` (with corrective clicks): mIoU against the number of clicks, model and baseline,
  and every further corrector scored in the same run;
* ``worst/NN_<image>.png``: the lowest-IoU objects, ground truth contour in green, the
  prediction in translucent red, the four clicks as dots;
* ``summary.json``: the summary numbers and the run's settings.

Drawing is plain OpenCV so the backend needs no plotting library.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from ..imageio import write_image
from ..overlay import draw_overlay
from .results import FIRST_CLICKS, Case, EvalResult, shown_iou

MODEL_RGB = (52, 101, 164)
BASELINE_RGB = (230, 145, 56)
OTHER_RGB = ((78, 154, 6), (117, 80, 123), (204, 0, 0), (46, 52, 54))  # further correctors
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fmt(v, digits):
    return "" if v is None else f"{v:.{digits}f}"


def _ious(values) -> str:
    return "" if values is None else json.dumps([round(v, 4) for v in values])


def write_csv(result: EvalResult, path: Path) -> None:
    clicks = result.max_clicks > FIRST_CLICKS
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        header = ["image", "object", "iou", "ms", "baseline_iou", "baseline_ms", "points"]
        if clicks:
            header += ["noc85", "noc90", "ious", "baseline_noc85", "baseline_noc90", "baseline_ious"]
        w.writerow(header)
        for r in result.rows:
            row = [
                r.image,
                r.object,
                _fmt(r.iou, 4),
                _fmt(r.ms, 2),
                _fmt(r.baseline_iou, 4),
                _fmt(r.baseline_ms, 2),
                json.dumps(np.asarray(r.points).astype(int).tolist()),
            ]
            if clicks:
                row += [
                    r.noc(0.85) or "",
                    r.noc(0.90) or "",
                    _ious(r.ious),
                    r.noc(0.85, True) or "",
                    r.noc(0.90, True) or "",
                    _ious(r.baseline_ious),
                ]
            w.writerow(row)


def _nice_step(top: int, ticks: int = 5) -> int:
    raw = max(top / ticks, 1.0)
    mag = 10 ** math.floor(math.log10(raw))
    return int(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))


def _text(img, s, org, scale=0.45, rgb=(30, 30, 30), thickness=1, anchor="left"):
    (tw, th), _ = cv2.getTextSize(s, FONT, scale, thickness)
    x, y = org
    if anchor == "center":
        x -= tw // 2
    elif anchor == "right":
        x -= tw
    cv2.putText(img, s, (int(x), int(y)), FONT, scale, rgb, thickness, cv2.LINE_AA)


def histogram_image(result: EvalResult, width: int = 720, height: int = 440, bins: int = 10) -> np.ndarray:
    """Bars of objects per IoU bin (RGB uint8); ``bins`` equal bins over 0-100 %."""
    series = []
    if result.miou is not None:
        series.append((f"model  mIoU {result.miou:.1f}", [r.iou for r in result.rows], MODEL_RGB))
    if result.baseline_miou is not None:
        series.append(
            (f"{result.baseline}  mIoU {result.baseline_miou:.1f}", [r.baseline_iou for r in result.rows], BASELINE_RGB)
        )
    # A method with an mIoU scored every row, so its IoUs are all numbers.
    counts = [np.histogram(np.clip(cast("list[float]", v), 0, 1), bins=bins, range=(0.0, 1.0))[0] for _, v, _ in series]
    top = max([int(c.max()) for c in counts] + [1])
    step = _nice_step(top)
    ymax = step * math.ceil(top / step)

    img = np.full((height, width, 3), 255, np.uint8)
    left, right, bottom, top_m = 70, 30, 60, 60
    x0, x1, y0, y1 = left, width - right, height - bottom, top_m  # y0 is the axis line (bottom)
    to_y = lambda c: int(round(y0 - (y0 - y1) * c / ymax))  # noqa: E731

    for tick in range(0, ymax + 1, step):
        y = to_y(tick)
        cv2.line(img, (x0, y), (x1, y), (225, 225, 225), 1)
        cv2.line(img, (x0 - 5, y), (x0, y), (30, 30, 30), 1)
        _text(img, str(tick), (x0 - 9, y + 5), anchor="right")
    group = (x1 - x0) / bins
    bar = group * 0.8 / max(len(series), 1)
    for s, c in enumerate(counts):
        for b, n in enumerate(c):
            bx = x0 + b * group + group * 0.1 + s * bar
            if n:
                cv2.rectangle(img, (int(bx), to_y(n)), (int(bx + bar) - 1, y0), series[s][2], -1)
    for b in range(bins + 1):
        x = int(round(x0 + b * group))
        cv2.line(img, (x, y0), (x, y0 + 5), (30, 30, 30), 1)
        _text(img, f"{100 * b // bins}", (x, y0 + 20), anchor="center")
    _frame(img, (x0, x1, y0, y1), "IoU (%)", "objects", f"IoU per object (n={result.n})", series)
    return img


def _click_series(result: EvalResult, label: str, others: Sequence[tuple[str, EvalResult]]) -> list:
    """``(legend, {clicks: mIoU}, colour)`` for the model, its baseline and the other correctors."""
    series = []
    runs = [(label, result, False, MODEL_RGB), (result.baseline, result, True, BASELINE_RGB)]
    runs += [(name, other, False, OTHER_RGB[i % len(OTHER_RGB)]) for i, (name, other) in enumerate(others)]
    for name, res, baseline, rgb in runs:
        by = res.miou_by_clicks(baseline)
        if by:
            series.append((f"{name}  NoC@90 {res.noc(0.90, baseline):.2f}", by, rgb))
    return series


def clicks_image(
    result: EvalResult,
    width: int = 720,
    height: int = 440,
    label: str = "model",
    others: Sequence[tuple[str, EvalResult]] = (),
) -> np.ndarray:
    """mIoU after 4..N clicks (RGB uint8), model and baseline, with the 85 % and 90 % lines;
    ``others`` adds the same model's curve under other correctors, scored on the same clicks."""
    series = _click_series(result, label, others)
    values = [v for _, by, _ in series for v in by.values()]
    ymin = min(80, 5 * math.floor(min(values + [100]) / 5))
    step = _nice_step(100 - ymin)
    counts = list(range(FIRST_CLICKS, result.max_clicks + 1))

    img = np.full((height, width, 3), 255, np.uint8)
    left, right, bottom, top_m = 70, 30, 60, 60
    x0, x1, y0, y1 = left, width - right, height - bottom, top_m
    to_y = lambda v: int(round(y0 - (y0 - y1) * (v - ymin) / (100 - ymin)))  # noqa: E731
    to_x = lambda k: int(round(x0 + (x1 - x0) * (k - counts[0]) / max(len(counts) - 1, 1)))  # noqa: E731

    for tick in range(ymin, 101, step):
        y = to_y(tick)
        cv2.line(img, (x0, y), (x1, y), (225, 225, 225), 1)
        cv2.line(img, (x0 - 5, y), (x0, y), (30, 30, 30), 1)
        _text(img, str(tick), (x0 - 9, y + 5), anchor="right")
    for level in (85, 90):
        if level >= ymin:
            y = to_y(level)
            for xa in range(x0, x1, 12):  # dashed
                cv2.line(img, (xa, y), (min(xa + 6, x1), y), (150, 150, 150), 1)
            _text(img, f"{level}%", (x1 - 2, y - 4), 0.4, (110, 110, 110), anchor="right")
    label_every = max(1, math.ceil(len(counts) / 16))
    for i, k in enumerate(counts):
        x = to_x(k)
        cv2.line(img, (x, y0), (x, y0 + 5), (30, 30, 30), 1)
        if i % label_every == 0 or k == counts[-1]:
            _text(img, str(k), (x, y0 + 20), anchor="center")
    cv2.line(img, (x0, y0), (x1, y0), (30, 30, 30), 1)
    cv2.line(img, (x0, y0), (x0, y1), (30, 30, 30), 1)
    for _, by, rgb in series:
        pts = np.array([(to_x(k), to_y(v)) for k, v in by.items()], np.int32)
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, rgb, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, (int(p[0]), int(p[1])), 3, rgb, -1, cv2.LINE_AA)
    _frame(
        img,
        (x0, x1, y0, y1),
        "clicks (4 extreme points, then corrections)",
        "mIoU (%)",
        f"mIoU by number of clicks (n={result.n})",
        series,
        axes=False,
    )
    return img


def _frame(
    img: np.ndarray, box: tuple[int, int, int, int], xlabel: str, ylabel: str, title: str, series, axes: bool = True
) -> None:
    """A plot's axes, axis labels (the y one turned), title and legend, drawn into ``img``."""
    x0, x1, y0, y1 = box
    if axes:
        cv2.line(img, (x0, y0), (x1, y0), (30, 30, 30), 1)
        cv2.line(img, (x0, y0), (x0, y1), (30, 30, 30), 1)
    _text(img, xlabel, ((x0 + x1) // 2, img.shape[0] - 15), 0.55, anchor="center")
    turned = np.full((24, 120, 3), 255, np.uint8)
    _text(turned, ylabel, (60, 17), 0.55, anchor="center")
    yc = (y0 + y1) // 2 - 60
    img[yc : yc + 120, 8:32] = np.ascontiguousarray(np.rot90(turned))
    _text(img, title, (x0, 25), 0.6, thickness=1)
    widest = max((cv2.getTextSize(label, FONT, 0.45, 1)[0][0] for label, _, _ in series), default=0)
    for s, (label, _, rgb) in enumerate(series):
        ly, lx = 25 + s * 20, min(x1 - 230, img.shape[1] - widest - 30)
        cv2.rectangle(img, (lx, ly - 10), (lx + 12, ly + 2), rgb, -1)
        _text(img, label, (lx + 18, ly + 1))


def overlay_image(case: Case) -> np.ndarray:
    """The picture with the prediction (red), the ground truth contour (green) and the clicks."""
    r = case.row
    series = r.ious if r.iou is not None else r.baseline_ious
    after = f" after {FIRST_CLICKS + len(series) - 1} clicks" if series else ""
    pred = case.pred if case.pred is not None else np.zeros(case.gt.shape, bool)
    return draw_overlay(
        case.image, pred, r.points, truth=case.gt, text=f"IoU {100 * shown_iou(r):.1f}%{after}  {r.object}"
    )


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "object"


def write_worst(result: EvalResult, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("[0-9][0-9]_*.png"):  # only files an earlier run of ours wrote
        old.unlink()
    names = []
    for rank, case in enumerate(result.worst, 1):
        stem = Path(case.row.image).stem
        tag = stem if case.row.object == stem else f"{stem}_{case.row.object}"
        name = f"{rank:02d}_{_safe(tag)}.png"
        write_image(folder / name, overlay_image(case))
        names.append(name)
    return names


def write_report(
    result: EvalResult,
    out_dir,
    extra: dict | None = None,
    label: str = "model",
    others: Sequence[tuple[str, EvalResult]] = (),
) -> Path:
    """Write every artefact into ``out_dir`` (created if needed); returns the folder. ``others``:
    the same objects scored with other correctors, drawn beside ``result`` in ``clicks.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(result, out / "objects.csv")
    write_image(out / "iou_histogram.png", histogram_image(result))
    if result.max_clicks > FIRST_CLICKS:
        write_image(out / "clicks.png", clicks_image(result, label=label, others=others))
    worst = write_worst(result, out / "worst")
    summary = dict(extra or {})
    summary.update(result.summary())
    summary["worst"] = [
        {"image": c.row.image, "object": c.row.object, "iou": round(shown_iou(c.row), 4), "file": f"worst/{n}"}
        for c, n in zip(result.worst, worst)
    ]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return out
