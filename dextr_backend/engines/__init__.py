"""Inference engines for the network's pass 1: torch (the reference), ONNX Runtime and OpenVINO.

Most of a click's cost on a CPU is the network's forward pass, and both runtimes run the same
graph two to four times faster than eager PyTorch on a small CPU (README, *Measured*). An engine
here is numpy in, numpy out: ``(N, 4, S, S)`` float32 inputs -> ``(N, 1, S, S)`` float32 logits,
so the predictor stays the same object whatever computes them.

Only the 4-channel pass-1 network is exported (``export``). What needs torch stays in torch: a
version's 7-channel pass 2, ``lite0h``'s reuse of pass 1's features, and f-BRS, which needs
gradients through the network. ``runtimes`` loads an exported graph into a runtime;
``build.build_predictor`` chooses one and falls back to torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import InputError
from ..settings import ENGINES

TORCH = "torch"
# The order ``auto`` tries them in: fastest first at equal masks, as measured on a 2-core EPYC
# (README, *Measured*: OpenVINO f32 then ONNX Runtime, both ahead of torch).
RUNTIMES = ("openvino", "onnxruntime")


class Engine(Protocol):
    """A compiled pass-1 network: ``(N, 4, S, S)`` float32 -> ``(N, 1, S, S)`` float32 logits."""

    name: str  # "onnxruntime" or "openvino", as DEXTR_ENGINE names it
    precision: str  # what it computes in ("fp32", "int8")

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def check_engine(name: str | None) -> str:
    """A ``DEXTR_ENGINE`` / ``--engine`` value, normalised (empty: ``auto``); anything else is one line."""
    value = (name or "").strip().lower() or "auto"
    if value not in ENGINES:
        raise InputError(f"unknown engine {str(name)[:40]!r}: use {', '.join(ENGINES)}")
    return value


def candidates(name: str, device_type: str) -> tuple[str, ...]:
    """The runtimes to try, in order, for an engine setting on a device; empty means torch.

    A CUDA device always runs torch: the runtimes here are CPU builds."""
    name = check_engine(name)
    if device_type != "cpu" or name == TORCH:
        return ()
    return RUNTIMES if name == "auto" else (name,)


__all__ = ["ENGINES", "RUNTIMES", "TORCH", "Engine", "candidates", "check_engine"]
