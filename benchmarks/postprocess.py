"""Which post-processing steps help? mIoU of the same model and clicks with each step on or off.

One forward pass per object; every post-processing variant is applied to the same
probabilities, so the differences are the steps' alone.

    python benchmarks/postprocess.py ../shared/data/GrabCut ../shared/data/Berkeley
    python benchmarks/postprocess.py --bsds-val ../shared/data/BSDS500 --thresholds 0.3,0.4,0.5,0.6,0.7

Choose defaults on the training data's validation split (``--bsds-val``: the same held-out
BSDS500 images training validates on), and only report the benchmarks.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from tqdm import tqdm

from dextr_backend import geometry
from dextr_backend.build import build_predictor
from dextr_backend.data.benchmarks import load_dataset
from dextr_backend.errors import DextrError
from dextr_backend.evaluation.metrics import iou
from dextr_backend.imageio import read_image
from dextr_backend.postprocess import PostProcess
from dextr_backend.settings import Settings

VARIANTS = {
    "none": PostProcess(keep_connected=False, max_hole_fraction=0.0),
    "connected": PostProcess(keep_connected=True, max_hole_fraction=0.0),
    "holes 1%": PostProcess(keep_connected=False, max_hole_fraction=0.01),
    "connected + holes 1%": PostProcess(keep_connected=True, max_hole_fraction=0.01),
    "connected + holes 5%": PostProcess(keep_connected=True, max_hole_fraction=0.05),
    "trim 1px + connected + holes 5%": PostProcess(keep_connected=True, max_hole_fraction=0.05, trim=1),
    "trim 2px + connected + holes 5%": PostProcess(keep_connected=True, max_hole_fraction=0.05, trim=2),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("datasets", nargs="*", help="benchmark folders (layouts as for `dextr-backend evaluate`)")
    p.add_argument("--bsds-val", default=None, help="BSDS500 folder: score its validation split's regions too")
    p.add_argument("--val-objects", type=int, default=300, help="validation regions to score (default 300)")
    p.add_argument(
        "--first",
        action="store_true",
        help="take the first --val-objects regions (as bsds-lite0-v2's card did) instead of "
        "spreading them over every validation image",
    )
    p.add_argument("--weights", default=None, help="weights version or file (default: current)")
    p.add_argument("--thresholds", default=None, help="comma-separated thresholds to sweep too (default: the weights')")
    p.add_argument(
        "--drop-background",
        action="store_true",
        help="with --bsds-val: leave out regions spanning the picture, as `train --drop-background` does",
    )
    p.add_argument(
        "--flip", action=argparse.BooleanOptionalAction, default=None, help="test-time flip (default: $DEXTR_FLIP)"
    )
    p.add_argument("--jitter", type=int, default=0, help="click jitter in pixels (default 0)")
    p.add_argument("--json", action="store_true", help="print the table as one JSON line last")
    args = p.parse_args(argv)
    try:
        return run(args, p)
    except DextrError as exc:  # bad folder or weights: one line, not a traceback
        p.exit(2, f"error: {exc}\n")


def run(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    predictor = build_predictor(args.weights, postprocess=VARIANTS["none"], flip=args.flip)
    thresholds = [float(t) for t in args.thresholds.split(",")] if args.thresholds else [predictor.threshold]
    sources = [(str(root), load_dataset(root, shared_data=Settings.from_env().shared_data)) for root in args.datasets]
    if args.bsds_val:
        from dextr_backend.data.objects import as_eval_objects, bsds_regions
        from dextr_backend.data.splits import split, spread

        val = split(bsds_regions(args.bsds_val, drop_background=args.drop_background))[1]
        val = val[: args.val_objects] if args.first else spread(val, args.val_objects)
        sources.append(("BSDS500 validation", list(as_eval_objects(val))))
    if not sources:
        p.error("give at least one dataset folder or --bsds-val")
    table = {}
    for root, ds in sources:
        scores = {(t, name): [] for t in thresholds for name in VARIANTS}
        for i, obj in enumerate(tqdm(ds, desc=str(root), unit="obj", disable=None)):
            image = obj.image if obj.image is not None else read_image(obj.image_path)
            rng = np.random.default_rng([0, i])
            points = geometry.extreme_points(obj.mask, args.jitter, rng)
            prob = predictor.predict(image, points).probabilities
            for t in thresholds:
                for name, post in VARIANTS.items():
                    scores[(t, name)].append(iou(post(prob > t, points), obj.mask, obj.ignore))
        table[str(root)] = {f"t={t:g} {name}": round(100 * float(np.mean(v)), 2) for (t, name), v in scores.items()}
    names = list(next(iter(table.values())))
    width = max(len(n) for n in names)
    print(f"{'variant':<{width}}  " + "  ".join(f"{r[-20:]:>20}" for r in table))
    for n in names:
        print(f"{n:<{width}}  " + "  ".join(f"{table[r][n]:>20.2f}" for r in table))
    if args.json:
        print(json.dumps(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
