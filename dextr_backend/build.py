"""Version or file -> network -> ready :class:`DextrPredictor`, in one place (the role of SAM's
``build_sam.py`` and torchvision's builders), so serving, evaluation, training and promotion all
threshold, trim and route corrections exactly as a weights version says.

>>> predictor = build_predictor()                      # the current version, as Settings say
>>> predictor = build_predictor("bsds-lite0-v3.2", device="cpu")
"""

from __future__ import annotations

import torch
from torch import nn

from .models import build_model, get_architecture, load_state
from .postprocess import PostProcess
from .predictor import DextrPredictor
from .settings import Settings
from .weights.store import WeightsStore
from .weights.versions import LoadedWeights


def model_from(arch: str, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """The network of ``arch`` holding ``state_dict`` (strictly fitted)."""
    return load_state(build_model(arch), state_dict)


def make_predictor(
    model: nn.Module,
    arch: str,
    input_size: int,
    threshold: float,
    trim: int = 0,
    *,
    version: str = "custom",
    device: str | torch.device = "auto",
    flip: bool = False,
    cpu_bf16: bool = False,
    **kwargs,
) -> DextrPredictor:
    """A predictor for a network in memory (a training run's, before it is a version)."""
    kwargs.setdefault("postprocess", PostProcess(trim=trim))
    kwargs.setdefault("corrections", get_architecture(arch).corrections)
    return DextrPredictor(
        model, input_size, threshold=threshold, device=device, version=version, flip=flip, cpu_bf16=cpu_bf16, **kwargs
    )


def predictor_for(
    loaded: LoadedWeights, *, device: str | torch.device = "auto", flip: bool = False, cpu_bf16: bool = False, **kwargs
) -> DextrPredictor:
    """A predictor for loaded weights, with the version's threshold, trim and input size
    (``kwargs`` such as ``threshold`` or ``postprocess`` override them)."""
    kwargs.setdefault("threshold", loaded.threshold)
    if kwargs.get("corrector") in (None, "auto") and loaded.meta.corrector:
        kwargs["corrector"] = loaded.meta.corrector  # the version's own way with corrective clicks
    return make_predictor(
        model_from(loaded.arch, loaded.state_dict),
        loaded.arch,
        loaded.input_size,
        trim=loaded.meta.trim,
        version=loaded.version,
        device=device,
        flip=flip,
        cpu_bf16=cpu_bf16,
        **kwargs,
    )


def build_predictor(
    version: str | None = None,
    *,
    settings: Settings | None = None,
    store: WeightsStore | None = None,
    device: str | torch.device | None = None,
    **kwargs,
) -> DextrPredictor:
    """The predictor for ``version`` (a name or a ``.pt``/``.pth`` path; default: ``settings.weights``,
    else the store's current one) on ``device`` (default: ``settings.device``), with the settings'
    flip and bf16. ``settings`` default to the environment's; ``store`` to the settings' store."""
    settings = settings if settings is not None else Settings.from_env()
    store = store if store is not None else WeightsStore.from_settings(settings)
    kwargs.setdefault("flip", settings.flip)
    kwargs.setdefault("cpu_bf16", settings.cpu_bf16)
    kwargs.setdefault("corrector", settings.corrector)
    loaded = store.load(version if version is not None else settings.weights)
    return predictor_for(loaded, device=device if device is not None else settings.device, **kwargs)


__all__ = ["build_predictor", "make_predictor", "model_from", "predictor_for"]
