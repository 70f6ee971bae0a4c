"""``dextr-backend predict``: one image, four clicks, a mask (plus overlay and polygons)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np

from ..errors import InputError
from ..imageio import check_output_path, read_image, write_image
from ..overlay import draw_overlay
from ..threads import configure_threads
from .options import add_engine

log = logging.getLogger(__name__)


def parse_points(text: str) -> np.ndarray:
    """``"x,y x,y x,y x,y"`` (spaces or semicolons between pairs) -> (N, 2) float array."""
    pairs = [p for p in text.replace(";", " ").split() if p]
    try:
        pts = [tuple(float(v) for v in p.split(",")) for p in pairs]
    except ValueError:
        raise InputError(f"points must look like 'x,y x,y x,y x,y', got {text!r}") from None
    if any(len(p) != 2 for p in pts):
        raise InputError(f"each point needs exactly two numbers 'x,y', got {text!r}")
    return np.array(pts, dtype=np.float64).reshape(-1, 2)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment one object from its extreme points",
        description="Segment one object of IMAGE from its 4 (or more) extreme points: "
        "left-, right-, top- and bottom-most, in pixels.",
    )
    p.add_argument("image", help="image file (JPEG, PNG, BMP, ...)")
    p.add_argument("--points", required=True, help='extreme points as "x,y x,y x,y x,y" (pixels)')
    p.add_argument("--weights", default=None, help="weights version or .pt/.pth file (default: current)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("-o", "--output", default=None, help="write the mask as a PNG (255 = object)")
    p.add_argument("--overlay", default=None, help="write the image with the mask and points drawn on it")
    p.add_argument("--polygons", default=None, help="write the mask's polygons (with holes) as JSON")
    p.add_argument(
        "--threshold", type=float, default=None, help="probability threshold in [0, 1) (default: the weights')"
    )
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average in the mirrored crop's prediction (default: $DEXTR_FLIP)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: $DEXTR_THREADS, else all CPUs this process may use)",
    )
    add_engine(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..build import build_predictor
    from ..postprocess import mask_to_polygons, polygons_to_json
    from ..settings import Settings

    points = parse_points(args.points)
    for path in (args.output, args.overlay):  # refuse a bad output before minutes of work, not after
        if path:
            check_output_path(path)
    if args.polygons:
        check_output_path(args.polygons, (".json",))
    if args.threshold is not None and not 0.0 <= args.threshold < 1.0:
        raise InputError(f"--threshold {args.threshold:g} must lie in [0, 1)")
    image = read_image(args.image)
    configure_threads(args.threads if args.threads is not None else Settings.from_env().threads)
    kwargs = {} if args.flip is None else {"flip": args.flip}
    if args.engine is not None:
        kwargs["engine"] = args.engine
    if args.threshold is not None:
        kwargs["threshold"] = args.threshold
    predictor = build_predictor(args.weights, device=args.device, **kwargs)
    t0 = time.perf_counter()
    pred = predictor.predict(image, points)
    ms = (time.perf_counter() - t0) * 1000
    if args.output:
        write_image(args.output, pred.mask.astype(np.uint8) * 255)
    if args.overlay:
        write_image(args.overlay, draw_overlay(image, pred.mask, points))
    if args.polygons:
        with open(args.polygons, "w", encoding="utf-8") as fh:
            json.dump(polygons_to_json(mask_to_polygons(pred.mask)), fh)
    print(
        json.dumps(
            {
                "area": int(pred.mask.sum()),
                "score": round(pred.score, 4),
                "ms": round(ms, 1),
                "weights": predictor.version,
                "engine": predictor.engine_name,
                "mask": args.output,
                "overlay": args.overlay,
                "polygons": args.polygons,
            }
        ),
        file=sys.stdout,
    )
    return 0
