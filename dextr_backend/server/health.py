"""What ``/health`` and ``/metrics`` report: the version served and whether its file is sound,
and in queue mode whether Redis answers and a worker listens. Both are open without auth, so
every message passes through :func:`redact_text` (a Redis URL may carry a password)."""

from __future__ import annotations

from .. import __version__
from ..errors import ServiceUnavailable, WeightsError
from ..queue import TRAIN_QUEUE
from ..queue.client import QueueClient
from ..redact import redact_text
from ..service.cache import ImageCache
from ..service.resident import ResidentPredictor
from .metrics import Metrics


def health(resident: ResidentPredictor, queue: QueueClient | None) -> tuple[dict, int]:
    """``(body, status)``: 200 UP, or 503 DOWN with the reason."""
    body = {"status": "UP", "model_class": "DEXTR", "version": __version__,
            "mode": "queue" if queue else "in-process"}
    try:
        body["model_version"] = resident.version
        resident.check()
    except WeightsError as exc:
        return {**body, "status": "DOWN", "reason": redact_text(str(exc))}, 503
    if queue:
        try:
            queue.ping()
            workers = queue.workers()
            body["workers"] = len(workers)
            body["queue_depth"] = queue.depth()
            body["train_workers"] = len(queue.workers(TRAIN_QUEUE))
            if not workers:
                return {**body, "status": "DOWN", "reason": "no worker is serving the dextr-predict queue"}, 503
        except ServiceUnavailable as exc:
            return {**body, "status": "DOWN", "reason": redact_text(str(exc))}, 503
    return body, 200


def metrics_text(metrics: Metrics, resident: ResidentPredictor, queue: QueueClient | None,
                 cache: ImageCache | None) -> str:
    """The Prometheus exposition: request counters and latencies, plus these gauges."""
    gauges = {}
    try:
        gauges["dextr_model_info"] = ("Weights version served.", 1, {"version": resident.version})
    except WeightsError:
        pass
    if queue:
        try:
            gauges["dextr_queue_depth"] = ("Jobs waiting in dextr-predict.", queue.depth(), {})
            gauges["dextr_workers"] = ("Workers with a fresh heartbeat.", len(queue.workers()), {})
        except ServiceUnavailable:
            gauges["dextr_redis_up"] = ("Redis reachable.", 0, {})
    if cache is not None:
        gauges["dextr_image_cache_items"] = ("Decoded images cached in this process.", len(cache), {})
    return metrics.render(gauges)
