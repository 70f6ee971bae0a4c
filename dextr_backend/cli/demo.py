"""``dextr-backend demo``: a first prediction with nothing to prepare.

Takes an object from the benchmark data in ``../shared/data`` when it is there, else draws a
synthetic scene, simulates the four extreme clicks from the known mask, and writes the mask and an
overlay with the IoU against the truth.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from ..geometry import extreme_points
from ..imageio import read_image, write_image
from ..overlay import draw_overlay
from .options import add_engine


def default_data() -> str:
    """``$DEXTR_SHARED_DATA`` (default: ``../shared/data`` beside a source checkout), shown in
    ``--help``. A malformed unrelated setting must not break ``--help``: ``main`` reports it when
    the command runs."""
    from ..errors import DextrError
    from ..settings import Settings

    try:
        return Settings.from_env().shared_data
    except DextrError:
        return Settings().shared_data


def synthetic_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured blob with a hole on a textured background: (RGB image, bool mask)."""
    rng = np.random.default_rng(seed)
    h, w = 360, 480
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([90 + 40 * np.sin(xx / 23.0), 110 + 30 * np.cos(yy / 17.0), 70 + 0 * xx], axis=2)
    mask = ((xx - 250) / 130.0) ** 2 + ((yy - 180) / 95.0) ** 2 < 1.0
    mask |= ((xx - 150) / 60.0) ** 2 + ((yy - 130) / 60.0) ** 2 < 1.0
    mask &= ((xx - 270) / 30.0) ** 2 + ((yy - 190) / 25.0) ** 2 > 1.0
    fg = np.stack([200 + 30 * np.sin(yy / 9.0), 60 + 20 * np.cos(xx / 7.0), 50 + 0 * xx], axis=2)
    image = np.where(mask[:, :, None], fg, bg) + rng.normal(0, 8, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def demo_object(data: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    if data:
        gt = data / "GrabCut" / "boundary_GT" / "106024.bmp"
        if gt.exists():
            # An unreadable file (imread's None) fails at the comparison, as it always has.
            mask = cast(np.ndarray, cv2.imread(str(gt), cv2.IMREAD_GRAYSCALE)) > 128
            return read_image(data / "GrabCut" / "data_GT" / "106024.jpg"), mask, "GrabCut/106024.jpg"
    image, mask = synthetic_scene()
    return image, mask, "synthetic scene"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="segment a sample object and write an overlay",
        description="Run one prediction on a sample object (from ../shared/data when present, "
        "else a synthetic scene) with clicks simulated from its true mask.",
    )
    p.add_argument("--out", default="demo-output", help="folder for mask.png and overlay.png (default: demo-output)")
    p.add_argument("--weights", default=None, help="weights version or .pt/.pth file (default: current)")
    data = default_data()
    p.add_argument("--data", default=data, help=f"benchmark data folder (default: {data or 'none'})")
    add_engine(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..build import build_predictor

    image, truth, name = demo_object(Path(args.data) if args.data else None)
    points = extreme_points(truth)
    predictor = build_predictor(args.weights, **({} if args.engine is None else {"engine": args.engine}))
    pred = predictor.predict(image, points)
    iou = float((pred.mask & truth).sum() / max((pred.mask | truth).sum(), 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_image(out / "mask.png", pred.mask.astype(np.uint8) * 255)
    write_image(
        out / "overlay.png",
        draw_overlay(image, pred.mask, points, truth=truth, text=f"{predictor.version}  IoU {100 * iou:.1f}"),
    )
    print(
        json.dumps(
            {
                "object": name,
                "points": points.tolist(),
                "iou": round(100 * iou, 2),
                "score": round(pred.score, 4),
                "weights": predictor.version,
                "engine": predictor.engine_name,
                "overlay": str(out / "overlay.png"),
                "mask": str(out / "mask.png"),
            }
        )
    )
    return 0
