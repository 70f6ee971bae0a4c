"""An exported ONNX graph, loaded into ONNX Runtime or OpenVINO for the CPU.

Graphs arrive as bytes that the caller has already checked against their recorded sha256 (see
``weights.exported``), so what runs is exactly what was checked: no path is reopened later.

Both runtimes are told the same thread count as torch (``threads.configure_threads``), and
neither spins or pins threads: on a small box the cores are shared with other workers, Label
Studio or training, and a busy-waiting pool slows all of them (ONNX Runtime on 2 busy cores:
55 ms per pass spinning, 27 ms not). OpenVINO computes in bf16 by default on a CPU with native
bf16 and then agrees with torch on only 99.7 % of the pixels, so its precision is fixed to f32.
"""

from __future__ import annotations

import importlib
import queue

import numpy as np

from . import RUNTIMES


def importable(name: str) -> bool:
    """Whether runtime ``name`` can be imported here (it is an optional dependency)."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


class OnnxRuntimeEngine:
    """ONNX Runtime's CPU provider; ``run`` is safe to call from several threads at once."""

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, graph: bytes, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are not ours to show
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.threads = int(threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input: np.ascontiguousarray(x, np.float32)})[0])


class OpenVinoEngine:
    """OpenVINO's CPU plugin at f32. An infer request serves one call at a time, so idle ones wait
    in a pool and a concurrent call makes its own (at most as many as calls at once)."""

    name = "openvino"

    def __init__(self, graph: bytes, threads: int, precision: str = "f32"):
        import openvino as ov

        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "ENABLE_CPU_PINNING": False,
        }
        self._compiled = core.compile_model(core.read_model(graph), "CPU", config)
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self.threads = int(threads)
        self.precision = "fp32" if precision == "f32" else precision

    def __call__(self, x: np.ndarray) -> np.ndarray:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            out = request.infer({0: np.ascontiguousarray(x, np.float32)})
            return np.array(out[0], np.float32, copy=True)  # the request's buffer is reused
        finally:
            self._idle.put(request)


def load(name: str, graph: bytes, threads: int):
    """Runtime ``name`` running ``graph`` (ONNX bytes) on ``threads`` CPU threads. Raises ImportError
    where the runtime is not installed, and the runtime's own error where it cannot compile."""
    if name not in RUNTIMES:
        raise ValueError(f"no runtime {name!r}")
    if name == "onnxruntime":
        return OnnxRuntimeEngine(graph, threads)
    return OpenVinoEngine(graph, threads)


__all__ = ["OnnxRuntimeEngine", "OpenVinoEngine", "importable", "load"]
