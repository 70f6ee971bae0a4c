"""Task images, fetched once and kept decoded in the process's image cache
(:mod:`dextr_backend.service.cache`), keyed by URL and by the Label Studio and token they came
through.

Only two kinds of URL are fetched: the Label Studio host's own (with its token), and hosts
explicitly allowed in ``DEXTR_ALLOWED_HOSTS``. Anything else (other hosts, ``file://``, local
paths) is refused, so a task cannot make the backend read internal services or disks; the
rules, redirects included, live in :mod:`.fetch`.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import InputError
from ..imageio import decode_image
from ..service.cache import ImageCache
from .client import LabelStudioClient
from .fetch import check_url, fetch_bytes, shown


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
