"""Options several commands share, spelled once."""

from __future__ import annotations

import argparse

from ..settings import ENGINES


def add_engine(p: argparse.ArgumentParser) -> None:
    """``--engine``: what runs pass 1 on a CPU (``DEXTR_ENGINE``; README, *The CPU engine*)."""
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="what runs the network's pass 1 on a CPU: auto (the fastest runtime installed), torch, "
        "onnxruntime or openvino (default: $DEXTR_ENGINE, else auto)",
    )
