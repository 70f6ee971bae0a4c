"""Weights versions: the published DEXTR checkpoints, downloads, imports and trained versions.

>>> from dextr_backend.weights import WeightsStore
>>> WeightsStore().load()          # the current version, checksum-verified, ready for build_model
"""

from .registry import KNOWN_WEIGHTS, KnownWeights, default_threshold
from .store import LoadedWeights, Version, WeightsStore

__all__ = ["KNOWN_WEIGHTS", "KnownWeights", "LoadedWeights", "Version", "WeightsStore", "default_threshold"]
