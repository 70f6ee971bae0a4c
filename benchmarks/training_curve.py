"""Plot a training run's validation score against training minutes, from its log.

`dextr-backend train` logs one JSON line per epoch (``"msg": "epoch done"``, with ``minutes``,
``val_miou`` and, for versions that take corrections, ``val_miou_6``: after 2 corrective clicks).
This draws them as curves in a PNG and prints the rows, so a run's curve can go into a model card.

    dextr-backend train ... 2> run.log
    python benchmarks/training_curve.py run.log --out curve.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

SERIES = (("val_miou", "4 clicks", (52, 101, 164)), ("val_miou_6", "6 clicks", (230, 145, 56)))


def epochs(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("msg") == "epoch done":
            rows.append(row)
    return rows


def draw(rows: list[dict], title: str, width: int = 720, height: int = 420) -> np.ndarray:
    img = np.full((height, width, 3), 255, np.uint8)
    x0, x1, y0, y1 = 70, width - 30, height - 60, 60
    values = [r[k] for r in rows for k, _, _ in SERIES if r.get(k) is not None]
    lo, hi = np.floor(min(values)) - 1, np.ceil(max(values)) + 1
    span = max(r["minutes"] for r in rows) or 1.0
    to_x = lambda m: int(x0 + (x1 - x0) * m / span)  # noqa: E731
    to_y = lambda v: int(y0 - (y0 - y1) * (v - lo) / (hi - lo))  # noqa: E731
    font = cv2.FONT_HERSHEY_SIMPLEX
    for v in np.arange(lo, hi + 1e-9, max(1.0, round((hi - lo) / 5))):
        cv2.line(img, (x0, to_y(v)), (x1, to_y(v)), (225, 225, 225), 1)
        cv2.putText(img, f"{v:.0f}", (x0 - 40, to_y(v) + 5), font, 0.45, (30, 30, 30), 1, cv2.LINE_AA)
    for m in np.linspace(0, span, 6):
        cv2.putText(img, f"{m:.0f}", (to_x(m) - 8, y0 + 20), font, 0.45, (30, 30, 30), 1, cv2.LINE_AA)
    cv2.line(img, (x0, y0), (x1, y0), (30, 30, 30), 1)
    cv2.line(img, (x0, y0), (x0, y1), (30, 30, 30), 1)
    for i, (key, label, rgb) in enumerate(SERIES):
        pts = [(to_x(r["minutes"]), to_y(r[key])) for r in rows if r.get(key) is not None]
        if not pts:
            continue
        cv2.polylines(img, [np.array(pts, np.int32).reshape(-1, 1, 2)], False, rgb, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, rgb, -1, cv2.LINE_AA)
        cv2.rectangle(img, (x1 - 160, 25 + 20 * i - 10), (x1 - 148, 25 + 20 * i + 2), rgb, -1)
        cv2.putText(img, f"val mIoU, {label}", (x1 - 142, 25 + 20 * i + 1), font, 0.45, (30, 30, 30), 1, cv2.LINE_AA)
    cv2.putText(img, title, (x0, 25), font, 0.55, (30, 30, 30), 1, cv2.LINE_AA)
    cv2.putText(
        img,
        "training minutes (wall clock, 2 shared CPU cores)",
        (x0 + 120, height - 15),
        font,
        0.5,
        (30, 30, 30),
        1,
        cv2.LINE_AA,
    )
    return img


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log", type=Path, help="the train command's log (JSON lines)")
    p.add_argument("--out", type=Path, default=Path("training-curve.png"), help="PNG to write")
    p.add_argument("--title", default="validation mIoU by training time", help="the plot's title")
    args = p.parse_args(argv)
    rows = epochs(args.log)
    if not rows:
        print(f"{args.log}: no 'epoch done' lines", file=sys.stderr)
        return 2
    for r in rows:
        print(
            f"epoch {r['epoch']:>3}  {r['minutes']:6.1f} min  loss {r['loss']:.4f}  "
            + "  ".join(f"{k} {r[k]:.2f}" for k, _, _ in SERIES if r.get(k) is not None)
        )
    cv2.imwrite(str(args.out), cv2.cvtColor(draw(rows, args.title), cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
