"""Version or file -> network -> ready :class:`DextrPredictor`, in one place (the role of SAM's
``build_sam.py`` and torchvision's builders), so serving, evaluation, training and promotion all
threshold, trim and route corrections exactly as a weights version says.

>>> predictor = build_predictor()                      # the current version, as Settings say
>>> predictor = build_predictor("bsds-lite0-v3.2", device="cpu", engine="openvino")

It also chooses what runs pass 1 on a CPU (``engines``): the setting's runtime with the version's
exported graph (cached and checked in the store, ``weights.exported``), else torch. A runtime that
is not installed, or a graph that cannot be exported or compiled, falls back to torch with one
warning per process: a request never fails for want of a faster engine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .engines import TORCH, Engine, candidates, runtimes
from .engines.export import FORMAT, export_onnx, pass_one_network
from .models import build_model, get_architecture, load_state
from .postprocess import PostProcess
from .predictor import DextrPredictor, pick_device
from .settings import Settings
from .weights.exported import ExportedGraphs
from .weights.files import sha256_file
from .weights.store import DEFAULT_ROOT, WeightsStore
from .weights.versions import LoadedWeights

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # fallbacks already warned about in this process


def _fall_back(key: str, message: str, *args) -> None:
    """One warning per kind of fallback and process; torch runs instead."""
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message + "; running on torch instead", *args)


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


def make_engine(
    loaded: LoadedWeights, model: nn.Module, engine: str, device: torch.device, root: Path, threads: int
) -> Engine | None:
    """The CPU runtime ``engine`` asks for (``auto``: the first installed of ``engines.RUNTIMES``)
    running ``model``'s pass 1, or None for torch."""
    names = candidates(engine, device.type)
    if not names:
        return None
    network = pass_one_network(model)
    if network is None:
        log.info("weights %s keep pass 1 in torch: their pass 2 reuses its features", loaded.version)
        return None
    installed = [name for name in names if runtimes.importable(name)]
    if not installed:
        _fall_back(f"import:{engine}", "engine %s: %s not installed", engine, " or ".join(names))
        return None
    try:
        sha = loaded.meta.sha256 or sha256_file(Path(str(loaded.meta.path)))
        graph = ExportedGraphs(root).get(
            sha, loaded.arch, loaded.input_size, fmt=FORMAT, make=lambda: export_onnx(network, loaded.input_size)
        )
    except Exception as exc:  # noqa: BLE001 - any exporter failure means the same: torch serves
        _fall_back(f"export:{loaded.arch}", "cannot export %s's network for %s (%s)", loaded.version, engine, exc)
        return None
    for name in installed:
        try:
            return runtimes.load(name, graph, threads)
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot compile the graph
            _fall_back(f"compile:{name}", "%s cannot run %s's graph (%s)", name, loaded.version, exc)
    return None


def predictor_for(
    loaded: LoadedWeights,
    *,
    device: str | torch.device = "auto",
    flip: bool = False,
    cpu_bf16: bool = False,
    engine: str = TORCH,
    engines_root: Path | str | None = None,
    threads: int | None = None,
    **kwargs,
) -> DextrPredictor:
    """A predictor for loaded weights, with the version's threshold, trim and input size
    (``kwargs`` such as ``threshold`` or ``postprocess`` override them). ``engine`` runs pass 1 on
    a CPU (default torch), on ``threads`` (default: torch's), with its graph cached under
    ``engines_root`` (default: the default store's root)."""
    kwargs.setdefault("threshold", loaded.threshold)
    if kwargs.get("corrector") in (None, "auto") and loaded.meta.corrector:
        kwargs["corrector"] = loaded.meta.corrector  # the version's own way with corrective clicks
    model = model_from(loaded.arch, loaded.state_dict)
    if engine != TORCH:
        root = Path(engines_root) if engines_root is not None else DEFAULT_ROOT
        threads = threads or torch.get_num_threads()
        kwargs["engine"] = make_engine(loaded, model, engine, pick_device(device), root, threads)
        if cpu_bf16 and kwargs["engine"] is not None:
            log.info("bf16 autocast is torch's alone: %s runs pass 1 in fp32", kwargs["engine"].name)
    return make_predictor(
        model,
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
    kwargs.setdefault("engine", settings.engine)
    loaded = store.load(version if version is not None else settings.weights)
    predictor = predictor_for(
        loaded, device=device if device is not None else settings.device, engines_root=store.root, **kwargs
    )
    # Debug here: a serving process says it at info when it loads (the worker's "model loaded"),
    # and `predict` keeps stderr for errors alone.
    log.debug(
        "predictor ready: weights %s, pass 1 on %s",
        predictor.version,
        predictor.engine_name,
        extra={
            "version": predictor.version,
            "engine": predictor.engine_name,
            "device": str(predictor.device),
            "threads": getattr(predictor.engine, "threads", torch.get_num_threads()),
        },
    )
    return predictor


__all__ = ["build_predictor", "make_engine", "make_predictor", "model_from", "predictor_for"]
