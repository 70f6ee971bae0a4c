"""Task images, fetched once and kept decoded in a bounded cache.

Interactive annotation sends one request per click on the same picture; decoding a photo
costs more than running the light network, so the decoded array is cached by URL.

Only two kinds of URL are fetched: the Label Studio host's own (with its token), and hosts
explicitly allowed in ``DEXTR_ALLOWED_HOSTS``. Anything else (other hosts, ``file://``, local
paths) is refused, so a task cannot make the backend read internal services or disks.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections import OrderedDict

import numpy as np

from ..errors import InputError
from ..imageio import decode_image
from .client import LabelStudioClient, fetch_public


class ImageCache:
    """LRU of decoded RGB images, bounded by total bytes."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            image = self._items.get(key)
            if image is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return image

    def put(self, key: str, image: np.ndarray) -> None:
        if image.nbytes > self.max_bytes:
            return
        image.setflags(write=False)      # shared between requests: nobody may paint on it
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


class ImageFetcher:
    def __init__(self, client: LabelStudioClient | None, allowed_hosts: tuple[str, ...] = (),
                 cache: ImageCache | None = None, max_bytes: int = 50 * 1024 * 1024):
        self.client = client
        self.allowed_hosts = tuple(h.strip().lower() for h in allowed_hosts if h.strip())
        self.cache = cache if cache is not None else ImageCache()
        self.max_bytes = max_bytes

    def _check(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme and parts.scheme not in ("http", "https"):
            raise InputError(f"image URL scheme {parts.scheme!r} is not fetched (http and https only)")
        if not parts.netloc:
            if self.client is None:
                raise InputError(f"relative image URL {url!r} needs LABEL_STUDIO_URL (or the /setup hostname)")
            return
        if self.client is not None and self.client.is_own_url(url):
            return
        host = (parts.hostname or "").lower()
        if host not in self.allowed_hosts and parts.netloc.lower() not in self.allowed_hosts:
            raise InputError(f"image host {parts.netloc!r} is not allowed; add it to DEXTR_ALLOWED_HOSTS")

    def get(self, url: str) -> np.ndarray:
        if not isinstance(url, str) or not url:
            raise InputError("the task has no image URL")
        cached = self.cache.get(url)
        if cached is not None:
            return cached
        self._check(url)
        if self.client is not None and self.client.is_own_url(url):
            data = self.client.fetch(url, max_bytes=self.max_bytes)
        else:
            data = fetch_public(url, max_bytes=self.max_bytes)
        image = decode_image(data, url)
        self.cache.put(url, image)
        return image
