"""CPU latency of every architecture, in one process so the numbers are comparable.

Random weights: speed does not depend on the values. Each network is timed alone (batch 1, at
its working size, under ``torch.inference_mode``) and, where asked, through the whole
predictor (crop, resize, heatmap, forward, paste-back, post-processing) on a 640x480 image.

    python benchmarks/latency.py                    # all architectures, all cores
    python benchmarks/latency.py --threads 1 --archs lite0 lite2 --bf16 --json out.json
    python benchmarks/latency.py --archs lite0 --size 384 --flip   # the shipped default's settings

With ``--engines`` it times the current weights version on every installed engine instead (torch,
ONNX Runtime, OpenVINO), interleaved in one process (``engine_latency.py``):

    python benchmarks/latency.py --engines                      # every engine, all cores
    python benchmarks/latency.py --engines --processes 2        # 2 processes at once, CPUs / 2 threads each
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from dextr_backend.models import ARCHITECTURES, build_model
from dextr_backend.predictor import DextrPredictor

BASELINE = "resnet101"


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: all CPUs, divided by --processes)"
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="timed runs per measurement (at most; default 10, 40 with --engines)"
    )
    p.add_argument(
        "--budget",
        type=float,
        default=15.0,
        help="seconds per measurement: stop repeating after this, keeping at least --min-repeats",
    )
    p.add_argument("--min-repeats", type=int, default=3, help="timed runs however slow the model is")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    p.add_argument(
        "--archs",
        nargs="+",
        default=list(ARCHITECTURES),
        choices=list(ARCHITECTURES),
        metavar="ARCH",
        help=f"architectures to time ({', '.join(ARCHITECTURES)})",
    )
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and input")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (check mask IoU before relying on it)")
    p.add_argument(
        "--size", type=int, default=None, help="input side for every architecture (default: each one's working size)"
    )
    p.add_argument("--flip", action="store_true", help="test-time flip: the mirrored crop is run too")
    p.add_argument("--no-predictor", action="store_true", help="skip the full predictor path")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' for stdout)")
    p.add_argument(
        "--engines",
        nargs="*",
        default=None,
        metavar="ENGINE",
        help="time the weights version on these engines instead of --archs (none named: torch, onnxruntime, openvino)",
    )
    p.add_argument("--processes", type=int, default=1, help="with --engines: processes measuring at once")
    p.add_argument("--weights", default=None, help="with --engines: the weights version (default: current)")
    p.add_argument("--weights-dir", default=None, help="with --engines: the user store (default: DEXTR_WEIGHTS_DIR's)")
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = max(1, default_threads() // max(1, args.processes))
    if args.engines == []:
        args.engines = ["torch", "onnxruntime", "openvino"]
    if args.repeats is None:
        args.repeats = 10 if args.engines is None else 40
    return args


def timed(fn, warmup: int, repeats: int, min_repeats: int, budget: float) -> list[float]:
    """Milliseconds per call; slow models get fewer repeats so a run stays short."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max(repeats, 1):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
        if len(times) >= min_repeats and time.perf_counter() - start > budget:
            break
    return times


def summary(times: list[float]) -> dict:
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "runs": len(times)}


def precision(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def bench_arch(name: str, args) -> dict:
    spec = ARCHITECTURES[name]
    model = build_model(name).eval()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    size = args.size or spec.input_size
    x = (torch.rand(1, 4, size, size) * 255).contiguous(memory_format=fmt)

    def forward():
        with torch.inference_mode(), precision(args.bf16):
            model(x)
            if args.flip:
                model(x.flip(-1))

    row = {
        "arch": name,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "input_size": size,
        "network": summary(timed(forward, args.warmup, args.repeats, args.min_repeats, args.budget)),
    }
    if not args.no_predictor:
        predictor = DextrPredictor(model, size, device="cpu", flip=args.flip)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        points = np.array([[180, 260], [470, 230], [330, 110], [310, 400]], dtype=np.float64)

        def predict():
            with precision(args.bf16):
                predictor.predict(image, points)

        row["predictor"] = summary(timed(predict, 1, args.repeats, args.min_repeats, args.budget))
    return row


def speedups(rows: list[dict], key: str) -> None:
    base = next((r[key]["median_ms"] for r in rows if r["arch"] == BASELINE and key in r), None)
    for r in rows:
        if key in r:
            r[key]["speedup"] = base / r[key]["median_ms"] if base else None


def print_table(rows: list[dict], args) -> None:
    mode = (
        ("channels_last " if args.channels_last else "")
        + ("bf16" if args.bf16 else "fp32")
        + (", flip" if args.flip else "")
    )
    print(
        f"\ntorch {torch.__version__}, {args.threads} thread(s), batch 1, {mode}; "
        f"{platform.processor() or platform.machine()}"
    )
    head = f"{'arch':<10} {'params':>8} {'input':>6} {'median ms':>10} {'p90 ms':>9} {'runs':>5} {'x ' + BASELINE:>13}"
    has_pred = any("predictor" in r for r in rows)
    if has_pred:
        head += f" | {'predict ms':>10} {'p90 ms':>9} {'x ' + BASELINE:>13}"
    print(head)
    print("-" * len(head))
    for r in rows:
        n = r["network"]
        sp = f"{n['speedup']:.1f}" if n.get("speedup") else "-"
        line = (
            f"{r['arch']:<10} {r['params_m']:>7.1f}M {r['input_size']:>6} {n['median_ms']:>10.1f} "
            f"{n['p90_ms']:>9.1f} {n['runs']:>5} {sp:>13}"
        )
        if "predictor" in r:
            p = r["predictor"]
            sp = f"{p['speedup']:.1f}" if p.get("speedup") else "-"
            line += f" | {p['median_ms']:>10.1f} {p['p90_ms']:>9.1f} {sp:>13}"
        print(line)
    if has_pred:
        print("predict: DextrPredictor.predict on a 640x480 image, one object (crop, heatmap, network, paste-back)")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.engines is not None:
        import engine_latency

        return engine_latency.run(args)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.archs:
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        rows.append(bench_arch(name, args))
    speedups(rows, "network")
    speedups(rows, "predictor")
    print_table(rows, args)
    if args.json:
        doc = {
            "torch": torch.__version__,
            "threads": args.threads,
            "channels_last": args.channels_last,
            "bf16": args.bf16,
            "flip": args.flip,
            "results": rows,
        }
        text = json.dumps(doc, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
