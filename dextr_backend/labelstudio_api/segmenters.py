"""Where the server's masks come from: this process, or the queue's workers. Both answer the
tool-neutral ``segment(items, deadline)`` of :mod:`dextr_backend.service.segmentation` and report
their own part of ``/health`` and ``/metrics``; the app picks one when it is made, so no route
asks which mode it runs in, and every error takes one path (raised here; answered, redacted and
logged by the app). A worker's own error comes back as :class:`~dextr_backend.errors.ReportedError`
with its status.

Both also take a ``prefetch(ref)``: the picture of a task that just opened, fetched in the
background (into this process's cache, or staged in Redis for the workers) so that the first
click does not wait for it. At most ``PREFETCHING`` run at once; more are dropped, not queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import redis

from ..errors import DextrError, ReportedError, ServiceUnavailable
from ..labelstudio import jobs
from ..labelstudio.images import COMPUTE_SLOT, LabelStudioImages
from ..labelstudio.setups import SetupStore
from ..queue import TRAIN_QUEUE
from ..queue.client import QueueClient
from ..service.cache import ImageCache
from ..service.resident import ResidentPredictor
from ..service.segmentation import (
    ImageRef,
    LocalSegmenter,
    Segment,
    SegmentItem,
    Segments,
    job_payload,
    segments_from_job,
)
from ..settings import Settings
from .slots import ComputeSlots

log = logging.getLogger(__name__)

STAGED_IMAGES = 4  # pictures of a queued request fetched by the API first; a worker fetches any more
PREFETCHING = 2  # pictures of opened tasks fetched at once in the background


class Prefetcher:
    """Background fetches of opened tasks' pictures, bounded: one that finds every lane busy is
    dropped (the click fetches the picture itself, as it would have without this)."""

    def __init__(self, fetch):
        self._fetch = fetch
        self._pool = ThreadPoolExecutor(max_workers=PREFETCHING, thread_name_prefix="dextr-prefetch")
        self._free = threading.BoundedSemaphore(PREFETCHING)

    def __call__(self, ref: ImageRef) -> bool:
        """Start fetching ``ref``; False where it was dropped."""
        if not self._free.acquire(blocking=False):
            return False
        self._pool.submit(self._run, ref)
        return True

    def _run(self, ref: ImageRef) -> None:
        try:
            self._fetch(ref)
        except (DextrError, redis.RedisError) as exc:  # the click will say so, if it still matters
            log.info("prefetch failed", extra={"error": str(exc)[:300]})
        except Exception:  # noqa: BLE001 - a bug must not kill the pool's thread
            log.exception("prefetch crashed")
        finally:
            self._free.release()


class InProcessSegmenter:
    """The predictor of this process, at most ``DEXTR_MAX_CONCURRENT`` requests computing at once,
    each taking its slot only once its picture is in memory (:mod:`.slots`)."""

    mode = "in-process"

    def __init__(self, settings: Settings, resident: ResidentPredictor):
        self.settings = settings
        self.setups = SetupStore(None)  # what Label Studio sent to /setup: this process only
        self.images = LabelStudioImages(settings, self.setups)
        self.cache: ImageCache = self.images.cache
        self.local = LocalSegmenter(resident, self.images, settings.predict_timeout)
        self.slots = ComputeSlots(settings.max_concurrent)
        self.prefetch = Prefetcher(lambda ref: self.images.get(ref, time.monotonic() + settings.fetch_timeout))

    def segment(self, items: Sequence[SegmentItem], deadline: float) -> Segments:
        segments = self.local.segment(items, deadline)
        return Segments(segments.version, self._in_a_slot(segments.masks))

    def _in_a_slot(self, masks: Iterator[Segment]) -> Iterator[Segment]:
        """``masks`` made under one compute slot, which the image source takes once the picture is
        in memory (:data:`~dextr_backend.labelstudio.images.COMPUTE_SLOT`)."""
        slot = self.slots.slot()
        COMPUTE_SLOT.set(slot)
        try:
            yield from masks
        finally:
            slot.give_back()
            COMPUTE_SLOT.set(None)

    def health(self) -> tuple[dict, str | None]:
        return {}, None

    def gauges(self) -> dict:
        return {"dextr_image_cache_items": ("Decoded images cached in this process.", len(self.cache), {})}


class QueueSegmenter:
    """Workers on the ``dextr-predict`` queue, which keep the model loaded. The API fetches a
    request's first pictures itself and leaves them in Redis (``LabelStudioImages.stage``), so no
    worker waits on a slow host; the job (``jobs.segment``) carries the items and the API's
    deadline, and the masks come back packed."""

    mode = "queue"

    def __init__(self, settings: Settings, resident: ResidentPredictor):
        self.settings = settings
        self.queue = QueueClient(cast(str, settings.redis_url))  # made only when it is set (make_segmenter)
        self.setups = SetupStore(self.queue.redis)  # in Redis: seen by every API process and worker
        self.images = LabelStudioImages(settings, self.setups)  # to stage pictures: no model here
        self.cache: ImageCache | None = None
        self.prefetch = Prefetcher(lambda ref: self._stage([ref], time.monotonic() + settings.fetch_timeout))

    def segment(self, items: Sequence[SegmentItem], deadline: float) -> Segments:
        self._stage([item.image for item in items], deadline)
        result = self.queue.call(jobs.segment, job_payload(items, deadline), self.settings.predict_timeout)
        if "error" in result:
            raise ReportedError.from_payload(result)
        return segments_from_job(result["ok"])

    def _stage(self, refs: list[ImageRef], deadline: float) -> None:
        try:
            ttl = int(self.settings.predict_timeout) + 60
            self.images.stage(list(dict.fromkeys(refs))[:STAGED_IMAGES], deadline, self.queue.redis, ttl)
        except redis.RedisError:
            pass  # Redis is away: queue.call says so (or a worker fetches them)

    def health(self) -> tuple[dict, str | None]:
        """Workers and depth for ``/health``, and why it is DOWN (None: it is not)."""
        try:
            self.queue.ping()
            workers = self.queue.workers()
            body = {
                "workers": len(workers),
                "queue_depth": self.queue.depth(),
                "train_workers": len(self.queue.workers(TRAIN_QUEUE)),
            }
        except ServiceUnavailable as exc:
            return {}, str(exc)
        return body, None if workers else "no worker is serving the dextr-predict queue"

    def gauges(self) -> dict:
        try:
            return {
                "dextr_queue_depth": ("Jobs waiting in dextr-predict.", self.queue.depth(), {}),
                "dextr_workers": ("Workers with a fresh heartbeat.", len(self.queue.workers()), {}),
            }
        except ServiceUnavailable:
            return {"dextr_redis_up": ("Redis reachable.", 0, {})}


def make_segmenter(settings: Settings, resident: ResidentPredictor) -> InProcessSegmenter | QueueSegmenter:
    """The queue's workers where ``REDIS_URL`` is set, else this process."""
    return QueueSegmenter(settings, resident) if settings.redis_url else InProcessSegmenter(settings, resident)
