"""A version that takes corrections on each engine: pass 1 on the engine, its 7-channel pass 2 in torch.

Builds a random ``lite0c`` version in a temporary store (the timing does not depend on the
weights), then times, interleaved in one process, a 4-click request and a 4-click request with
one negative correction on every installed engine, and compares each corrected mask with torch's.

    python benchmarks/engine_corrections.py                # 20 runs each, 2 threads
    python benchmarks/engine_corrections.py --repeats 50 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

from dextr_backend.build import build_predictor
from dextr_backend.engines.runtimes import importable
from dextr_backend.models import build_model
from dextr_backend.settings import Settings
from dextr_backend.weights.store import WeightsStore

POINTS = [[170, 240], [470, 242], [320, 140], [322, 340]]
NEGATIVE = [[320, 240]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20, help="timed runs of each request per engine")
    ap.add_argument("--threads", type=int, default=2, help="torch and engine threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    store = WeightsStore(tempfile.mkdtemp(prefix="dextr-lite0c-"))
    store.add_version(build_model("lite0c").state_dict(), "lite0c", name="c", make_current=True, threshold=0.5)
    image = np.full((480, 640, 3), 30, np.uint8)
    cv2.ellipse(image, (320, 240), (150, 100), 0, 0, 360, (40, 40, 230), -1)
    engines = ["torch"] + [e for e in ("openvino", "onnxruntime") if importable(e)]
    settings = Settings.from_env()
    predictors = {
        e: build_predictor(
            "c", store=store, settings=dataclasses.replace(settings, engine=e, corrector="network"), device="cpu"
        )
        for e in engines
    }
    times: dict[str, dict[str, list[float]]] = {e: {"plain": [], "corrected": []} for e in engines}
    for k in range(args.repeats + 3):
        for e, p in predictors.items():
            for kind, negatives in (("plain", ()), ("corrected", NEGATIVE)):
                started = time.perf_counter()
                p.predict(image, POINTS, negatives=negatives)
                if k >= 3:  # the first runs warm up
                    times[e][kind].append(1000 * (time.perf_counter() - started))
    reference = predictors["torch"].predict(image, POINTS, negatives=NEGATIVE).mask
    print(f"lite0c, 640x480, {args.threads} threads, {args.repeats} interleaved runs (ms, p50)")
    print(f"{'engine':<12} {'pass 1':<12} {'4 clicks':>9} {'+1 negative':>12} {'IoU vs torch':>13}")
    for e, p in predictors.items():
        mask = p.predict(image, POINTS, negatives=NEGATIVE).mask
        iou = (mask & reference).sum() / max(1, (mask | reference).sum())
        plain, corrected = (statistics.median(times[e][k]) for k in ("plain", "corrected"))
        print(f"{e:<12} {p.engine_name:<12} {plain:9.1f} {corrected:12.1f} {iou:13.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
