"""Weights versions: the published DEXTR checkpoints, downloads, imports and trained versions.

``registry`` (what can be downloaded), ``versions`` (records and checks), ``files`` (hashing, the
one atomic write, the lock, tensors-only loading), ``store`` (the versions on disk) and
``download`` (installing a checkpoint from the network).

>>> from dextr_backend.weights import WeightsStore
>>> WeightsStore.from_settings(settings).load()   # the current version, checksum-verified
"""

from .registry import KNOWN_WEIGHTS, KnownWeights, default_threshold
from .store import WeightsStore
from .versions import LoadedWeights, Version

__all__ = ["KNOWN_WEIGHTS", "KnownWeights", "LoadedWeights", "Version", "WeightsStore", "default_threshold"]
