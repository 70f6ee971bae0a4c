"""Task images, fetched once and kept decoded in a bounded cache.

Interactive annotation sends one request per click on the same picture; decoding a photo
costs more than running the light network, so the decoded array is cached by URL (and by the
Label Studio and token it came through).

Only two kinds of URL are fetched: the Label Studio host's own (with its token), and hosts
explicitly allowed in ``DEXTR_ALLOWED_HOSTS``. Anything else (other hosts, ``file://``, local
paths) is refused, so a task cannot make the backend read internal services or disks; the
rules, redirects included, live in :mod:`.fetch`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from ..errors import InputError
from ..imageio import decode_image
from .client import LabelStudioClient
from .fetch import check_url, fetch_bytes, shown


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
    """Task images by URL through the checked fetch of :mod:`.fetch`, decoded and cached.

    The cache key holds Label Studio's URL and a hash of its token besides the image URL: two
    projects on two Label Studios (or two tokens) never get each other's picture."""

    def __init__(self, client: LabelStudioClient | None, allowed_hosts: tuple[str, ...] = (),
                 cache: ImageCache | None = None, max_bytes: int = 50 * 1024 * 1024, *, timeout: float = 20.0):
        self.client = client
        self.allowed_hosts = tuple(h.strip().lower() for h in allowed_hosts if h.strip())
        self.cache = cache if cache is not None else ImageCache()
        self.max_bytes = max_bytes
        self.timeout = timeout
        token = hashlib.sha256(client.api_key.encode()).hexdigest()[:32] if client and client.api_key else "-"
        self._identity = f"{client.url if client else '-'}|{token}"

    def get(self, url: str, deadline: float | None = None) -> np.ndarray:
        if not isinstance(url, str) or not url:
            raise InputError("the task has no image URL")
        base = self.client.url if self.client is not None else None
        target = check_url(url, base=base, allowed_hosts=self.allowed_hosts)
        key = f"{self._identity}|{target}"
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        if self.client is not None:
            data = self.client.fetch(url, max_bytes=self.max_bytes, deadline=deadline,
                                     allowed_hosts=self.allowed_hosts, timeout=self.timeout)
        else:
            data = fetch_bytes(url, allowed_hosts=self.allowed_hosts, max_bytes=self.max_bytes,
                               timeout=self.timeout, deadline=deadline)
        image = decode_image(data, shown(url))
        self.cache.put(key, image)
        return image
