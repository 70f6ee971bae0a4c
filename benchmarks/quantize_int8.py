"""INT8 post-training quantisation of the default network's pass 1 (issue 25, item 2): does it
keep the masks, and what does it buy?

Calibrated on BSDS500 training crops (regions of the training split, extreme points from their
masks, the 4-channel input the network sees), never on the benchmarks. Variants:

- ``ort-qdq``: ONNX Runtime's ``quantize_static`` (QDQ, per-channel int8 weights, int8
  activations, MinMax calibration), run by ONNX Runtime and by OpenVINO (which reads QDQ graphs
  as int8);
- ``nncf``: OpenVINO NNCF's ``quantize`` (mixed preset), where ``nncf`` is installed.

For each: latency of the network alone, interleaved with fp32 (OpenVINO f32), and mIoU on
GrabCut, Berkeley and DAVIS against fp32 on the same objects and clicks. The rule: ship INT8 only
if every mIoU stays within 0.3 of fp32.

    python benchmarks/quantize_int8.py                        # 200 calibration crops, all three sets
    python benchmarks/quantize_int8.py --calibration 64 --limit 20 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from dextr_backend import geometry
from dextr_backend.build import model_from
from dextr_backend.data.benchmarks import load_dataset
from dextr_backend.data.objects import bsds_regions, load_object
from dextr_backend.data.splits import split, spread
from dextr_backend.engines import runtimes
from dextr_backend.engines.export import export_onnx, pass_one_network
from dextr_backend.evaluation.runner import evaluate_objects
from dextr_backend.settings import Settings
from dextr_backend.weights.store import WeightsStore

DATASETS = ("GrabCut", "Berkeley", "DAVIS")
MAX_DROP = 0.3  # mIoU points INT8 may lose against fp32 on any set, and still ship
FAILED: dict[str, str] = {}  # variants a runtime could not compile, and why


def calibration_inputs(data: Path, n: int, size: int) -> np.ndarray:
    """``(n, 4, S, S)`` float32 inputs from BSDS500 training regions, spread over the images."""
    train, _ = split(bsds_regions(data / "BSDS500", drop_background=True))
    out = []
    for ref in spread(train, n):
        image, mask = load_object(ref)
        x, _ = geometry.prepare_input(image, geometry.extreme_points(mask), size)
        out.append(x.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def ort_qdq(fp32: bytes, calibration: np.ndarray) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(calibration)

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {"x": row[None]}

    with tempfile.TemporaryDirectory() as folder:
        src, dst = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8,
        )
        return dst.read_bytes()


class OpenVinoModel:
    """An ``openvino.Model`` (NNCF's output) as an engine."""

    name, precision = "openvino", "int8"

    def __init__(self, model, threads: int):
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        self.request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
        self.threads = threads

    def __call__(self, x):
        return np.array(self.request.infer({0: x})[0], copy=True)


def nncf_int8(fp32: bytes, calibration: np.ndarray, threads: int):
    import nncf
    import openvino as ov

    model = ov.Core().read_model(fp32)
    quantized = nncf.quantize(
        model, nncf.Dataset(list(calibration), lambda row: row[None]), preset=nncf.QuantizationPreset.MIXED
    )
    return OpenVinoModel(quantized, threads)


def variants(fp32: bytes, calibration: np.ndarray, threads: int, want: list[str]) -> dict:
    """``{name: engine}``: fp32 first, then every INT8 variant that can be made here."""
    out = {"fp32 (openvino f32)": runtimes.OpenVinoEngine(fp32, threads)}
    makers = {}
    if "ort-qdq" in want:
        qdq = ort_qdq(fp32, calibration)
        makers["int8 ort-qdq on onnxruntime"] = lambda: runtimes.OnnxRuntimeEngine(qdq, threads)
        makers["int8 ort-qdq on openvino"] = lambda: runtimes.OpenVinoEngine(qdq, threads)
    if "nncf" in want:
        makers["int8 nncf on openvino"] = lambda: nncf_int8(fp32, calibration, threads)
    for name, make in makers.items():
        try:
            out[name] = make()
        except ImportError as exc:
            print(f"{name}: left out, {exc} (pip install nncf)", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot compile this graph: reported
            print(f"{name}: cannot be compiled: {str(exc).splitlines()[-1][:200]}", file=sys.stderr)
            FAILED[name] = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
    return out


def latency(engines: dict, x: np.ndarray, repeats: int) -> dict:
    """p50 / p95 ms of the network alone, interleaved."""
    names = list(engines)
    for name in names:
        engines[name](x)
    times: dict[str, list[float]] = {n: [] for n in names}
    import time

    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            engines[name](x)
            times[name].append((time.perf_counter() - t0) * 1000)
    return {n: {"p50": float(np.percentile(t, 50)), "p95": float(np.percentile(t, 95))} for n, t in times.items()}


def miou(predictor, engine, data: Path, name: str, limit: int | None) -> float:
    predictor.engine = engine
    result = evaluate_objects(predictor, load_dataset(data / name, limit=limit), progress=False)
    return float(result.miou)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="weights version (default: current)")
    p.add_argument("--data", default=Settings.from_env().shared_data, help="../shared/data")
    p.add_argument("--calibration", type=int, default=200, help="BSDS500 training crops to calibrate on")
    p.add_argument("--limit", type=int, default=None, help="objects per benchmark set (default: all)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    p.add_argument("--repeats", type=int, default=40, help="interleaved timed runs")
    p.add_argument("--variants", default="ort-qdq,nncf", help="comma-separated: ort-qdq, nncf")
    p.add_argument("--json", action="store_true", help="print the results as one JSON line last")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    loaded = WeightsStore.from_settings(Settings.from_env()).load(args.weights)
    model = model_from(loaded.arch, loaded.state_dict)
    fp32 = export_onnx(pass_one_network(model), loaded.input_size)
    calibration = calibration_inputs(data, args.calibration, loaded.input_size)
    engines = variants(fp32, calibration, args.threads, args.variants.split(","))
    times = latency(engines, calibration[:1], args.repeats)
    from dextr_backend.build import predictor_for

    predictor = predictor_for(loaded, device="cpu")
    scores = {n: {d: miou(predictor, e, data, d, args.limit) for d in DATASETS} for n, e in engines.items()}
    base = next(iter(scores.values()))
    print(f"weights {loaded.version}; {len(calibration)} BSDS500 calibration crops; {args.threads} thread(s)")
    print(f"{'variant':<30} {'p50 ms':>7} {'p95 ms':>7} " + " ".join(f"{d:>9}" for d in DATASETS) + "  ship?")
    verdicts = {}
    for name, s in scores.items():
        drops = [base[d] - s[d] for d in DATASETS]
        verdicts[name] = all(drop <= MAX_DROP for drop in drops)
        print(
            f"{name:<30} {times[name]['p50']:>7.1f} {times[name]['p95']:>7.1f} "
            + " ".join(f"{s[d]:>9.2f}" for d in DATASETS)
            + (
                ""
                if name == next(iter(scores))
                else f"  {'yes' if verdicts[name] else 'no'} (max drop {max(drops):.2f})"
            )
        )
    for name, why in FAILED.items():
        print(f"{name:<30} could not be compiled: {why}")
    if args.json:
        print(json.dumps({"latency": times, "miou": scores, "within_0.3": verdicts, "failed": FAILED}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
