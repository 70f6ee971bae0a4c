"""Every installed engine side by side, in one process, interleaved: ``latency.py --engines``.

The engines (torch, ONNX Runtime, OpenVINO) run the current weights version's pass 1 on the CPU.
Each iteration times every engine once, in a rotating order, so a machine that gets busier or
quieter mid-run shifts all of them alike. Two measurements: the network alone (batch 1, at the
version's input size) and the whole predictor (640x480 picture, 4 clicks: crop, heatmap,
network, paste-back, post-processing). Printed: p50, p95, the speed-up over torch at p50, and
each engine's mask IoU against torch's on the same picture (equal masks are the condition).

Run as ``latency.py --engines`` (or this script itself). ``--processes N`` runs N such processes
at once, each on ``threads`` = CPUs / N (the rule of ``threads.thread_count``), as N workers
sharing the machine would, and pools their timings.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import platform
import time

import cv2
import numpy as np
import torch

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu_line() -> str:
    """The CPU model and the flags that decide what the runtimes can use."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    have = [f for f in FLAGS if f in flags]
    lacks = [f for f in FLAGS if f not in flags]
    return f"{model}; flags: {' '.join(have) or 'unknown'}" + (f" (not: {' '.join(lacks)})" if flags else "")


def picture() -> tuple[np.ndarray, np.ndarray]:
    """A 640x480 picture with one object, and its 4 extreme points."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 90, (480, 640, 3)).astype(np.uint8)
    cv2.ellipse(image, (320, 240), (180, 120), 15, 0, 360, (40, 60, 220), -1)
    image = cv2.GaussianBlur(image, (3, 3), 0)
    return image, np.array([[140, 240], [500, 240], [320, 110], [320, 370]], np.float64)


def predictors(args) -> dict:
    """``{engine: predictor}`` for every engine asked for that is installed (a fallback is left out)."""
    from dextr_backend.build import build_predictor
    from dextr_backend.settings import Settings

    settings = dataclasses.replace(Settings.from_env(), device="cpu", flip=args.flip)
    if args.weights_dir:
        settings = dataclasses.replace(settings, weights_dir=args.weights_dir)
    out = {}
    for name in args.engines:
        pred = build_predictor(args.weights, settings=settings, engine=name, threads=args.threads)
        if pred.engine_name == name:
            out[name] = pred
    return out


def network_call(pred):
    """The network alone on one input, as the predictor would call it."""
    x = (np.random.default_rng(1).random((1, 4, pred.input_size, pred.input_size)) * 255).astype(np.float32)
    if pred.engine is not None:
        return lambda: pred.engine(x)
    tensor = torch.from_numpy(x)

    def run():
        with torch.inference_mode():
            pred.model(tensor)

    return run


def interleaved(calls: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each entry, round-robin with a rotating start."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return times


def measure(args, barrier=None) -> dict:
    """This process's raw timings and mask IoUs against torch."""
    torch.set_num_threads(args.threads)
    preds = predictors(args)
    image, points = picture()
    masks = {n: p.predict(image, points).mask for n, p in preds.items()}
    ref = masks.get("torch")
    ious = {n: float((m & ref).sum() / max((m | ref).sum(), 1)) if ref is not None else None for n, m in masks.items()}
    if barrier is not None:
        barrier.wait()
    network = interleaved({n: network_call(p) for n, p in preds.items()}, args.repeats, args.warmup)
    whole = interleaved(
        {n: (lambda p=p: p.predict(image, points)) for n, p in preds.items()}, args.repeats, args.warmup
    )
    return {"network": network, "predictor": whole, "iou": ious}


def _child(args, barrier, queue) -> None:
    queue.put(measure(args, barrier))


def pooled(args) -> dict:
    """``--processes N``: N processes measure at once; their timings are pooled."""
    if args.processes == 1:
        return measure(args)
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(args.processes), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(args, barrier, queue)) for _ in range(args.processes)]
    for proc in procs:
        proc.start()
    parts = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    out: dict = {"iou": parts[0]["iou"]}
    for key in ("network", "predictor"):
        out[key] = {n: [t for part in parts for t in part[key][n]] for n in parts[0][key]}
    return out


def table(result: dict, args) -> dict:
    """Print the side-by-side table; return it as data."""
    rows = {}
    for name in result["network"]:
        rows[name] = {
            key: {
                "p50": float(np.percentile(result[key][name], 50)),
                "p95": float(np.percentile(result[key][name], 95)),
            }
            for key in ("network", "predictor")
        }
        rows[name]["mask_iou_vs_torch"] = result["iou"].get(name)
    base = rows.get("torch")
    print(f"\n{cpu_line()}")
    print(
        f"torch {torch.__version__}; {args.processes} process(es) x {args.threads} thread(s); "
        f"{args.repeats} interleaved runs each; flip {'on' if args.flip else 'off'}"
    )
    cols = f"{'p50':>8} {'p95':>8} {'x torch':>8}"
    head = f"{'engine':<12} {cols} | {cols} | mask IoU\n{'':<12} {'network alone':^26} | {'whole predictor':^26} |"
    print(head + "\n" + "-" * len(head.splitlines()[0]))
    for name, row in rows.items():
        cells = []
        for key in ("network", "predictor"):
            speedup = base[key]["p50"] / row[key]["p50"] if base else None
            row[key]["speedup_vs_torch"] = speedup
            cells.append(f"{row[key]['p50']:>8.1f} {row[key]['p95']:>8.1f} {speedup or 0:>7.2f}x")
        iou = row["mask_iou_vs_torch"]
        print(f"{name:<12} {cells[0]} | {cells[1]} | {'-' if iou is None else f'{iou:.4f}'}")
    print("ms; pred = DextrPredictor.predict on a 640x480 picture, 4 clicks; IoU = its mask against torch's")
    return rows


def run(args) -> int:
    rows = table(pooled(args), args)
    if args.json:
        text = json.dumps({"cpu": cpu_line(), "processes": args.processes, "threads": args.threads, "engines": rows})
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as fh:
                fh.write(text + "\n")
    return 0


if __name__ == "__main__":  # the same as `latency.py --engines ...`
    import sys

    import latency

    sys.exit(latency.main(["--engines", *sys.argv[1:]]))
