"""TEMPORARY until the lower-layer merge."""
from .predictor import DextrPredictor


def build_predictor(version=None, *, settings=None, store=None, device=None):
    from .weights.store import WeightsStore
    store = store or (WeightsStore.from_settings(settings) if settings else WeightsStore())
    wanted = version or (settings.weights if settings else None)
    device = device or (settings.device if settings else "auto")
    kw = {"flip": settings.flip, "cpu_bf16": settings.cpu_bf16} if settings else {}
    return DextrPredictor.from_weights(wanted, device=device, store=store, **kw)
