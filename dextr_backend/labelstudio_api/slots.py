"""Prediction slots of the in-process server: at most ``DEXTR_MAX_CONCURRENT`` requests compute at once.

A request takes its slot only once its picture is in memory, and gives it back while it waits
on the network for another (see ``labelstudio.images.COMPUTE_SLOT``), so a slow image host
delays its own requests and nobody else's.
"""

from __future__ import annotations

import threading
import time

from ..errors import ServiceTimeout


class ComputeSlots:
    def __init__(self, count: int):
        self.count = max(1, count)
        self._free = threading.BoundedSemaphore(self.count)

    def slot(self) -> Slot:
        """A new request's claim, not yet holding a slot."""
        return Slot(self)


class Slot:
    """One request's claim on a :class:`ComputeSlots`; used by the one thread working on that request."""

    def __init__(self, slots: ComputeSlots):
        self._slots, self.held = slots, False

    def take(self, deadline: float | None = None) -> None:
        """Hold a slot (at once if this request already does), waiting no later than ``deadline``."""
        if self.held:
            return
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._slots._free.acquire(timeout=wait):
            raise ServiceTimeout(
                f"all {self._slots.count} prediction slots stayed busy until the deadline "
                "(DEXTR_MAX_CONCURRENT, DEXTR_PREDICT_TIMEOUT); retry, or raise them"
            )
        self.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self._slots._free.release()
