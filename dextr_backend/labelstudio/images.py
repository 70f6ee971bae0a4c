"""Task images, fetched once and kept decoded in the process's image cache
(:mod:`dextr_backend.service.cache`), keyed by URL and by the Label Studio and token they came
through.

Only two kinds of URL are fetched: the Label Studio host's own (with its token), and hosts
explicitly allowed in ``DEXTR_ALLOWED_HOSTS``. Anything else (other hosts, ``file://``, local
paths) is refused, so a task cannot make the backend read internal services or disks; the
rules, redirects included, live in :mod:`.fetch`. A ``data:image/...;base64,`` URI, which Label
Studio accepts as task data, is the image itself: decoded here, within the same byte and pixel
limits, and never fetched.

Waiting on the network holds no prediction slot: a server that limits how many predictions
compute at once puts its slot in :data:`COMPUTE_SLOT`, and :meth:`ImageFetcher.get` takes it only
once the picture is in memory (and gives it back while it fetches another). In queue mode a
worker is the slot: the API fetches the pictures of a request first (:meth:`ImageFetcher.stage`)
and leaves their bytes in Redis, where the worker's ``get`` finds them (through the rq job it
runs) instead of fetching.
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextvars import ContextVar
from typing import cast

import numpy as np
import redis
from rq import get_current_job

from ..errors import InputError, ServiceTimeout
from ..imageio import decode_image
from ..queue.keys import STAGED_IMAGE
from ..service.cache import ImageCache, shared_cache
from ..service.segmentation import ImageRef
from ..settings import Settings
from .client import LabelStudioClient
from .fetch import FetchError, FetchGate, LaneTimeout, check_url, data_image_bytes, fetch_bytes, origin, shown
from .setups import Connection, SetupStore, connection_for

# The compute slot of the request this thread works on, or None: anything with ``take(deadline)``
# (blocks until free, or raises at the deadline) and ``give_back()``, both safe to repeat.
COMPUTE_SLOT: ContextVar = ContextVar("dextr_compute_slot", default=None)

_RULES: tuple[FetchGate, float] | None = None
_RULES_LOCK = threading.Lock()


def fetch_rules(settings: Settings | None = None) -> tuple[FetchGate, float]:
    """This process's image-fetch gate and minimum rate (bytes/s): made anew from ``settings`` when
    given (a server does so as it starts), else from the environment's on first use."""
    global _RULES
    with _RULES_LOCK:
        if settings is not None or _RULES is None:
            settings = settings or Settings.from_env()
            _RULES = (
                FetchGate(settings.fetch_concurrency, settings.fetch_per_host),
                max(0.0, settings.fetch_min_rate_kb) * 1000,
            )
        return _RULES


class ImageFetcher:
    """Task images by URL through the checked fetch of :mod:`.fetch`, decoded and cached.

    The cache key holds Label Studio's URL and a hash of its token besides the image URL: two
    projects on two Label Studios (or two tokens) never get each other's picture."""

    def __init__(
        self,
        client: LabelStudioClient | None,
        allowed_hosts: tuple[str, ...] = (),
        cache: ImageCache | None = None,
        max_bytes: int = 50 * 1024 * 1024,
        *,
        timeout: float = 20.0,
        max_pixels: int | None = None,
    ):
        self.client = client
        self.allowed_hosts = tuple(h.strip().lower() for h in allowed_hosts if h.strip())
        self.cache = cache if cache is not None else ImageCache()
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_pixels = max_pixels  # None: DEXTR_MAX_IMAGE_PIXELS as the environment says
        token = hashlib.sha256(client.api_key.encode()).hexdigest()[:32] if client and client.api_key else "-"
        self._identity = f"{client.url if client else '-'}|{token}"

    def get(self, url: str, deadline: float | None = None) -> np.ndarray:
        if not isinstance(url, str) or not url:
            raise InputError("the task has no image URL")
        slot = COMPUTE_SLOT.get()
        inline = url[:5].lower() == "data:"
        if inline:
            key, name, target = _data_key(url), "the data:image in the task", None
        else:
            base = self.client.url if self.client is not None else None
            target = check_url(url, base=base, allowed_hosts=self.allowed_hosts)
            key, name = f"{self._identity}|{target}", shown(url)
        image = self.cache.get(key)
        if image is None:
            if slot is not None:
                slot.give_back()  # waiting on the network computes nothing
            data = data_image_bytes(url, self.max_bytes) if inline else _staged(key)
            if data is None:
                data = self._fetch(url, target, deadline, slot)
            if slot is not None:
                slot.take(deadline)  # at once where _fetch took it already
            image = decode_image(data, name, self.max_pixels)
            self.cache.put(key, image)
        elif slot is not None:
            slot.take(deadline)
        return image

    def stage(self, url: str, deadline: float | None, conn: redis.Redis, ttl: int) -> int:
        """Queue mode, in the API: fetch ``url`` now, within the same rules, and leave its bytes in
        Redis for ``ttl`` seconds for the worker that runs the request; returns the bytes staged (0:
        nothing to fetch, or there already). A ``data:`` URI is the image already."""
        if url[:5].lower() == "data:":
            return 0
        target = check_url(url, base=self.client.url if self.client else None, allowed_hosts=self.allowed_hosts)
        name = _staged_name(f"{self._identity}|{target}")
        if conn.expire(name, ttl):
            return 0
        data = self._fetch(url, target, deadline, None)
        conn.set(name, data, ex=ttl)
        return len(data)

    def _fetch(self, url: str, target, deadline: float | None, slot) -> bytes:
        """The bytes of ``url`` through one lane of this process's fetch gate, which is held until the
        compute slot is taken: bytes waiting for a slot stay within ``DEXTR_FETCH_CONCURRENCY``."""
        gate, min_rate = fetch_rules()
        client = self.client
        begun = time.monotonic()
        end = begun + self.timeout
        try:
            with gate.lane("{}://{}:{}".format(*origin(target)), end if deadline is None else min(end, deadline)):
                data = fetch_bytes(
                    url,
                    base=client.url if client else None,
                    allowed_hosts=self.allowed_hosts,
                    auth=client.auth_header if client else None,
                    max_bytes=self.max_bytes,
                    timeout=self.timeout,
                    deadline=deadline,
                    started=begun,
                    pool=client.pool if client else None,
                    min_rate=min_rate,
                )
                if slot is not None:
                    slot.take(deadline)
                return data
        except LaneTimeout:
            message = (
                f"cannot fetch {shown(url)}: no fetch to {target.host} came free in time ({gate.per_host} "
                f"at once per host: DEXTR_FETCH_PER_HOST; {gate.total} in all: DEXTR_FETCH_CONCURRENCY)"
            )
            raise (ServiceTimeout if deadline is not None and deadline < end else FetchError)(message) from None


class LabelStudioImages:
    """The image source of Label Studio tasks (:class:`~dextr_backend.service.segmentation.ImageSource`):
    a reference's project names its Label Studio (``LABEL_STUDIO_URL``, else what that project sent
    to ``/setup``, from ``setups``), whose token goes to its origin only. One client (one
    connection pool) per Label Studio and token, kept for the process."""

    def __init__(self, settings: Settings, setups: SetupStore, cache: ImageCache | None = None):
        self.settings, self.setups = settings, setups
        self.cache = cache if cache is not None else shared_cache(settings)
        self._clients: dict[Connection, LabelStudioClient] = {}
        self._lock = threading.Lock()

    def fetcher(self, project: int | None) -> ImageFetcher:
        connection = connection_for(self.settings, self.setups, project)
        client = None
        if connection is not None:
            with self._lock:
                client = self._clients.get(connection)
                if client is None:
                    client = self._clients[connection] = LabelStudioClient(
                        connection.url,
                        connection.api_key,
                        allowed_hosts=self.settings.allowed_hosts,
                        fetch_timeout=self.settings.fetch_timeout,
                    )
        return ImageFetcher(
            client,
            self.settings.allowed_hosts,
            self.cache,
            max_bytes=self.settings.max_image_mb * 1024 * 1024,
            timeout=self.settings.fetch_timeout,
            max_pixels=self.settings.max_image_pixels,
        )

    def get(self, ref: ImageRef, deadline: float) -> np.ndarray:
        return self.fetcher(ref.project).get(ref.url, deadline=deadline)

    def stage(self, refs, deadline: float, conn: redis.Redis, ttl: int) -> int:
        """Queue mode: fetch ``refs`` here and leave their bytes in Redis for the worker (see
        :meth:`ImageFetcher.stage`); returns the bytes staged."""
        return sum(self.fetcher(ref.project).stage(ref.url, deadline, conn, ttl) for ref in dict.fromkeys(refs))


def _staged_name(key: str) -> str:
    return STAGED_IMAGE.format(digest=hashlib.sha256(key.encode()).hexdigest())


def _staged(key: str) -> bytes | None:
    """The bytes the API staged for this picture, when this runs in a queue worker's job."""
    job = get_current_job()
    if job is None:
        return None
    try:
        return cast("bytes | None", job.connection.get(_staged_name(key)))  # no decode_responses
    except redis.RedisError:
        return None


def _data_key(uri: str) -> str:
    return "data|" + hashlib.blake2b(uri.encode("utf-8", "replace"), digest_size=16).hexdigest()
