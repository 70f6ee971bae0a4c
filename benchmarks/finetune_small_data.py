"""Small-data transfer learning, the mission's story: fine-tune the default model on 10, 25 and 50
labeled images of a domain it never saw, and measure held-out mIoU before and after.

The domain is DAVIS (video frames; the default model trained on BSDS500 only). Consecutive
frames are near-duplicates, so the split is by contiguous blocks, never at random: fine-tuning
images come from frames 000-199, the held-out test set is frames 250-344.

    python benchmarks/finetune_small_data.py                      # 10, 25, 50 images
    python benchmarks/finetune_small_data.py --sizes 10 --max-minutes 3 --json
    python benchmarks/finetune_small_data.py --sizes 25 --warmup 20    # one lever against the job's schedule

Its defaults are a retraining job's schedule (``labelstudio/retrain.py``: 10 epochs of 160
samples, lr 2e-3, 100 warm-up steps, no colour jitter), so each option measures one lever.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dextr_backend.cli.train import part_list
from dextr_backend.data.objects import as_eval_objects, folder_objects
from dextr_backend.errors import DextrError
from dextr_backend.evaluation.runner import evaluate_objects
from dextr_backend.models import build_model, load_state
from dextr_backend.postprocess import PostProcess
from dextr_backend.predictor import DextrPredictor
from dextr_backend.settings import Settings
from dextr_backend.training.samples import Augment
from dextr_backend.training.trainer import TrainConfig, Trainer
from dextr_backend.weights.store import WeightsStore

DEFAULT_DATA = Path(os.environ.get("DEXTR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def frame(ref) -> int:
    return int(Path(ref.image).stem)


def score(model, loaded, refs) -> float:
    predictor = DextrPredictor(
        model,
        loaded.input_size,
        threshold=loaded.threshold,
        device="cpu",
        postprocess=PostProcess(trim=loaded.meta.trim),
    )
    return evaluate_objects(predictor, as_eval_objects(refs), progress=False, warmup=False).miou


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", default=str(DEFAULT_DATA / "DAVIS"), help="DAVIS folder (img/ + gt/)")
    p.add_argument("--sizes", default="10,25,50", help="numbers of fine-tuning images")
    p.add_argument("--weights", default=None, help="starting weights version; none means the current one")
    p.add_argument("--epochs", type=int, default=10, help="epochs per fine-tuning run")
    p.add_argument("--samples-per-epoch", type=int, default=160, help="augmented samples per epoch")
    p.add_argument("--max-minutes", type=float, default=10.0, help="time budget per fine-tuning run")
    p.add_argument("--lr", type=float, default=2e-3, help="decoder learning rate")
    p.add_argument("--backbone-lr-scale", type=float, default=0.3, help="the backbone's rate, times --lr")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps before the cosine decay")
    p.add_argument("--color", type=float, default=0.0, help="colour jitter: brightness, contrast, saturation +-x")
    p.add_argument("--seed", type=int, default=0, help="the training's random seed (batches, augmentation)")
    p.add_argument(
        "--freeze",
        type=part_list,
        default=(),
        metavar="PARTS",
        help="comma-separated parts left untrained, e.g. backbone (as `train --freeze`)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print the results as one JSON line last")
    args = p.parse_args(argv)
    try:
        return run(args)
    except DextrError as exc:  # bad folder or weights: one line, not a traceback
        p.exit(2, f"error: {exc}\n")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)

    refs = folder_objects(args.data)
    pool = [r for r in refs if frame(r) < 200]
    test = [r for r in refs if frame(r) >= 250]
    loaded = WeightsStore.from_settings(Settings.from_env()).load(args.weights)
    base = load_state(build_model(loaded.arch), loaded.state_dict)
    t0 = time.monotonic()
    before = score(base, loaded, test)
    print(
        f"{loaded.version} on held-out DAVIS 250-344 ({len(test)} objects): mIoU {before:.2f} "
        f"({time.monotonic() - t0:.0f} s)",
        file=sys.stderr,
    )

    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        chosen = [pool[int(i)] for i in np.linspace(0, len(pool) - 1, n)]  # spread over the clips
        cfg = TrainConfig(
            arch=loaded.arch,
            resolution=loaded.input_size,
            epochs=args.epochs,
            samples_per_epoch=args.samples_per_epoch,
            lr=args.lr,
            backbone_lr_scale=args.backbone_lr_scale,
            warmup_steps=args.warmup,
            augment=Augment(color=args.color),
            max_minutes=args.max_minutes,
            threshold=loaded.threshold,
            trim=loaded.meta.trim,
            val_objects=0,
            freeze_bn=True,
            seed=args.seed,
            freeze=args.freeze,
        )
        with tempfile.TemporaryDirectory() as run_dir:
            start = time.monotonic()
            result = Trainer(cfg, chosen, [], run_dir, init_state=loaded.state_dict).run()
            minutes = (time.monotonic() - start) / 60
        after = score(load_state(build_model(loaded.arch), result.state_dict), loaded, test)
        row = {
            "images": n,
            "before": round(before, 2),
            "after": round(after, 2),
            "gain": round(after - before, 2),
            "train_minutes": round(minutes, 2),
            "steps": result.steps,
        }
        rows.append(row)
        print(
            f"{n:>3} images: {before:.2f} -> {after:.2f} ({after - before:+.2f}) in {minutes:.1f} min", file=sys.stderr
        )

    frozen = f", frozen: {','.join(args.freeze)}" if args.freeze else ""
    print(f"\nheld-out DAVIS frames 250-344, {len(test)} objects, start: {loaded.version}{frozen}")
    print(f"{'images':>6}  {'before':>7}  {'after':>7}  {'gain':>6}  {'minutes':>7}")
    for r in rows:
        print(
            f"{r['images']:>6}  {r['before']:>7.2f}  {r['after']:>7.2f}  {r['gain']:>+6.2f}  {r['train_minutes']:>7.1f}"
        )
    if args.json:
        print(
            json.dumps(
                {
                    "weights": loaded.version,
                    "test_objects": len(test),
                    "freeze": list(args.freeze),
                    "schedule": {
                        k: getattr(args, k)
                        for k in ("epochs", "samples_per_epoch", "lr", "backbone_lr_scale", "warmup", "color", "seed")
                    },
                    "rows": rows,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
