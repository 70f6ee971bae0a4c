"""One resident predictor per process, with hot reload.

Loading a network costs far more than a prediction, so a serving process (the in-process Label
Studio backend, a queue worker, a CVAT agent or nuclio worker) loads it once and keeps it. When
training promotes a new version, the next request takes it up without a restart: the store's
``stamp()`` (file modification times, one ``stat`` per file) says cheaply whether anything
changed, and only then is the current version's name read again.

``DEXTR_WEIGHTS`` pins a version (or a ``.pt`` file): then nothing is reloaded.
"""

from __future__ import annotations

import logging
import threading

from ..build import build_predictor
from ..predictor import DextrPredictor
from ..settings import Settings
from ..weights.store import WeightsStore

log = logging.getLogger(__name__)


class ResidentPredictor:
    """The loaded predictor of this process, replaced when the wanted version changes."""

    def __init__(self, settings: Settings, store: WeightsStore | None = None):
        self.settings = settings
        self.store = store or WeightsStore.from_settings(settings)
        self._predictor: DextrPredictor | None = None
        self._stamp: tuple | None = None
        self._current: str | None = None
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        """The version this process serves: ``DEXTR_WEIGHTS``, else the store's current one."""
        if self.settings.weights:
            return self.settings.weights
        stamp = self.store.stamp()
        if stamp != self._stamp or self._current is None:
            self._current, self._stamp = self.store.current().name, stamp
        return self._current

    def get(self) -> DextrPredictor:
        """The predictor for :attr:`version`, loaded now if it is not the one in memory."""
        wanted = self.version
        with self._lock:
            if self._predictor is None or self._predictor.version != wanted:
                log.info(
                    "loading weights",
                    extra={"version": wanted, "previous": self._predictor and self._predictor.version},
                )
                self._predictor = build_predictor(wanted, settings=self.settings, store=self.store)
                log.info("weights loaded", extra={"version": wanted, "engine": self._predictor.engine_name})
            return self._predictor

    @property
    def engine(self) -> str | None:
        """What runs pass 1 of the loaded predictor (None before one is loaded: asking loads nothing)."""
        return self._predictor.engine_name if self._predictor is not None else None

    def check(self) -> None:
        """Raise :class:`~dextr_backend.errors.WeightsError` when the version's file is missing or corrupt."""
        self.store.check(self.version)


class PinnedPredictor:
    """A given predictor, served as it is (no store, no reload): for a library caller that built
    its own, and for tests."""

    def __init__(self, predictor: DextrPredictor):
        self.predictor = predictor

    @property
    def version(self) -> str:
        return self.predictor.version

    def get(self) -> DextrPredictor:
        return self.predictor

    @property
    def engine(self) -> str | None:
        return self.predictor.engine_name

    def check(self) -> None:
        pass


_SHARED: ResidentPredictor | PinnedPredictor | None = None
_LOCK = threading.Lock()


def shared(settings: Settings | None = None) -> ResidentPredictor | PinnedPredictor:
    """This process's resident predictor, created on first use (from the environment's settings
    unless ``settings`` are given) and kept for the life of the process."""
    global _SHARED
    with _LOCK:
        if _SHARED is None:
            _SHARED = ResidentPredictor(settings or Settings.from_env())
        return _SHARED


def use(resident: ResidentPredictor | PinnedPredictor | None) -> None:
    """Make ``resident`` this process's predictor (``None``: build one again on next use)."""
    global _SHARED
    with _LOCK:
        _SHARED = resident
