"""Decoded images, kept in a bounded LRU for the life of a process.

Interactive annotation sends one request per click on the same picture, and decoding a photo
costs more than running the light network, so every adapter (Label Studio, nuclio) looks up the
decoded array here first. One cache per process, sized by ``DEXTR_IMAGE_CACHE_MB``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ..settings import Settings


class ImageCache:
    """LRU of decoded RGB images, bounded by total bytes."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            image = self._items.get(key)
            if image is not None:
                self._items.move_to_end(key)
            return image

    def put(self, key: str, image: np.ndarray) -> None:
        if image.nbytes > self.max_bytes:
            return
        image.setflags(write=False)  # shared between requests: nobody may paint on it
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = image
            self._bytes += image.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def __len__(self) -> int:
        return len(self._items)


_SHARED: ImageCache | None = None
_LOCK = threading.Lock()


def shared_cache(settings: Settings) -> ImageCache:
    """This process's image cache, created on first use with ``settings.image_cache_mb``."""
    global _SHARED
    with _LOCK:
        if _SHARED is None:
            _SHARED = ImageCache(settings.image_cache_mb * 1024 * 1024)
        return _SHARED
