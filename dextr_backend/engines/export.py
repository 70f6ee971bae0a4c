"""A version's pass-1 network as an ONNX graph, made from its own weights.

Only the 4-channel network that turns extreme points into the first mask is exported:

- ``lite0``, ``lite2``, ``lite0r`` and ``resnet101`` are that network;
- ``lite0c`` exports its frozen parent (``base``); its 7-channel corrector stays in torch;
- ``lite0h`` is not exported: its pass 2 reuses the features pass 1 left in torch, so both stay there.

The exporter is torch's TorchScript one (``dynamo=False``): it works offline with the ``onnx``
package alone, where the newer one also needs ``onnxscript``. The batch axis is dynamic, so one
graph serves any ``batch_size``.
"""

from __future__ import annotations

import ctypes
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..models import HeadedDextr

OPSET = 17
# Bump when the graph made for the same weights would differ (exporter settings, opset, names):
# a cached graph of another format is rebuilt rather than loaded.
FORMAT = 1
CHANNELS = 4


def pass_one_network(model: nn.Module) -> nn.Module | None:
    """The module that answers a 4-channel input inside ``model``, or None where pass 1 must stay in
    torch (a network that keeps pass 1's features for its pass 2)."""
    if isinstance(model, HeadedDextr):  # lite0h: pass 2 reads what pass 1 left behind
        return None
    if getattr(model, "corrections", False):  # lite0c: the frozen parent answers 4 channels
        return getattr(model, "base", None)
    return model


def export_onnx(network: nn.Module, input_size: int) -> bytes:
    """``network`` (on the CPU, in eval mode) as ONNX bytes: input ``x`` ``(N, 4, S, S)``, output
    ``logits`` ``(N, 1, S, S)``, N dynamic. Raises what the exporter raises (no ``onnx``, an op it
    cannot write)."""
    network = network.eval()
    example = torch.zeros(1, CHANNELS, int(input_size), int(input_size))
    with tempfile.TemporaryDirectory(prefix="dextr-export-") as folder, warnings.catch_warnings(), torch.no_grad():
        path = Path(folder) / "graph.onnx"  # torch's exporter is typed for a path, not a buffer
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            network,
            (example,),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        graph = path.read_bytes()
    _give_back_memory()
    return graph


def _give_back_memory() -> None:
    """The exporter's tracing leaves tens of MB in the allocator's free lists of a long-lived
    serving process; glibc returns them to the system on request (elsewhere: nothing to do)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


__all__ = ["CHANNELS", "FORMAT", "OPSET", "export_onnx", "pass_one_network"]
