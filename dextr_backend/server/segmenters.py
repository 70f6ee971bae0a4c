"""Where the server's masks come from: this process, or the queue's workers. Both answer one call,
``segment(body, request, deadline)``, and report their own part of ``/health`` and ``/metrics``;
the app picks one when it is made, so no route asks which mode it runs in, and every error
takes one path (raised here; answered, redacted and logged by the app). A worker's own error
comes back as :class:`~dextr_backend.errors.ReportedError` with its status.
"""

from __future__ import annotations

import time
from typing import cast

import redis

from ..errors import ReportedError, ServiceUnavailable
from ..labelstudio import jobs
from ..labelstudio.backend import LabelStudioBackend
from ..labelstudio.images import COMPUTE_SLOT
from ..labelstudio.protocol import project_id, task_image_url
from ..labelstudio.requests import DEADLINE_KEY, ParsedRequest
from ..labelstudio.setups import SetupStore, connection_for
from ..queue import TRAIN_QUEUE
from ..queue.client import QueueClient
from ..service.cache import ImageCache
from ..service.resident import ResidentPredictor
from ..settings import Settings
from .slots import ComputeSlots

STAGED_IMAGES = 4  # pictures of a queued request fetched by the API first; a worker fetches any more


class InProcessSegmenter:
    """The predictor of this process, at most ``DEXTR_MAX_CONCURRENT`` requests computing at once,
    each taking its slot only once its picture is in memory (:mod:`.slots`)."""

    mode = "in-process"

    def __init__(self, settings: Settings, resident: ResidentPredictor):
        self.settings = settings
        self.backend = LabelStudioBackend(settings, resident)
        self.setups = SetupStore(None)  # what Label Studio sent to /setup: this process only
        self.slots = ComputeSlots(settings.max_concurrent)
        self.cache: ImageCache = self.backend.cache

    def segment(self, body: dict, request: ParsedRequest, deadline: float) -> dict:
        connection = connection_for(self.settings, self.setups, project_id(body.get("project")))
        slot = self.slots.slot()
        token = COMPUTE_SLOT.set(slot)
        try:
            return self.backend.predict(body, connection=connection, deadline=deadline, parsed=request)
        finally:
            slot.give_back()
            COMPUTE_SLOT.reset(token)

    def health(self) -> tuple[dict, str | None]:
        return {}, None

    def gauges(self) -> dict:
        return {"dextr_image_cache_items": ("Decoded images cached in this process.", len(self.cache), {})}


class QueueSegmenter:
    """Workers on the ``dextr-predict`` queue, which keep the model loaded. The API fetches a
    request's first pictures itself and leaves them in Redis (``ImageFetcher.stage``), so no worker
    waits on a slow host; the job carries the API's wall-clock deadline."""

    mode = "queue"

    def __init__(self, settings: Settings, resident: ResidentPredictor):
        self.settings = settings
        self.queue = QueueClient(cast(str, settings.redis_url))  # made only when it is set (make_segmenter)
        self.setups = SetupStore(self.queue.redis)  # in Redis: seen by every API process and worker
        self.stager = LabelStudioBackend(settings, resident)  # its fetchers only: no model here
        self.cache: ImageCache | None = None

    def segment(self, body: dict, request: ParsedRequest, deadline: float) -> dict:
        body = {**body, DEADLINE_KEY: time.time() + max(0.0, deadline - time.monotonic())}
        self._stage(body, request, deadline)
        result = self.queue.call(jobs.predict, body, self.settings.predict_timeout)
        if "error" in result:
            raise ReportedError.from_payload(result)
        return result["ok"]

    def _stage(self, body: dict, request: ParsedRequest, deadline: float) -> None:
        urls = dict.fromkeys(
            task_image_url(task, request.config.image_key(p.to_name))
            for task, wanted in zip(request.tasks, request.objects)
            for p in wanted
            if p.ready
        )
        try:
            fetcher = self.stager.fetcher(connection_for(self.settings, self.setups, project_id(body.get("project"))))
            for url in list(urls)[:STAGED_IMAGES]:
                fetcher.stage(url, deadline, self.queue.redis, int(self.settings.predict_timeout) + 60)
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
