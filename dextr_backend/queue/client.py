"""What the API does with the queue: enqueue a prediction and wait for it, with a deadline;
enqueue training once per project; report depth, workers and training progress.

Failure is always an answer, never a hang: Redis down -> ServiceUnavailable; no worker alive ->
ServiceUnavailable; a worker killed mid-job -> the job is re-enqueued once, then
ServiceUnavailable; out of time -> ServiceTimeout naming the queue depth.
"""

from __future__ import annotations

import logging
import time

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from ..errors import ServiceTimeout, ServiceUnavailable
from . import PREDICT_QUEUE, TRAIN_QUEUE
from .worker import ALIVE_PREFIX, alive_key

log = logging.getLogger(__name__)

TRAIN_AGAIN_KEY = "dextr:train:{project}:again"


class QueueClient:
    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=10,
                                          health_check_interval=10)
        self.predict_queue = Queue(PREDICT_QUEUE, connection=self.redis)
        self.train_queue = Queue(TRAIN_QUEUE, connection=self.redis)
        self._alive, self._alive_checked = False, 0.0

    def _redis_down(self, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(f"Redis is unreachable at {self.redis_url} ({exc.__class__.__name__}); "
                                  "predictions resume by themselves once it is back")

    # ------------------------------------------------------------ health
    def ping(self) -> None:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise self._redis_down(exc) from None

    def workers(self, queue: str = PREDICT_QUEUE) -> list[str]:
        """Names of workers with a fresh heartbeat serving ``queue``."""
        try:
            names = []
            for key in self.redis.scan_iter(ALIVE_PREFIX + "*"):
                served = (self.redis.get(key) or b"").decode().split(",")
                if queue in served:
                    names.append(key.decode()[len(ALIVE_PREFIX):])
            return sorted(names)
        except redis.RedisError as exc:
            raise self._redis_down(exc) from None

    def _workers_recently(self, max_age: float = 1.0) -> bool:
        """Whether a predict worker is alive, asked of Redis at most once a second (hot path)."""
        now = time.monotonic()
        if now - self._alive_checked > max_age or not self._alive:
            self._alive = bool(self.workers())
            self._alive_checked = now
        return self._alive

    def depth(self, queue: Queue | None = None) -> int:
        try:
            return (queue or self.predict_queue).count
        except redis.RedisError as exc:
            raise self._redis_down(exc) from None

    # ------------------------------------------------------------ predict
    def predict(self, request: dict, timeout: float) -> dict:
        """Run ``jobs.predict`` on a worker; returns its payload (``ok`` or ``error``)."""
        deadline = time.monotonic() + timeout
        if not self._workers_recently():
            raise ServiceUnavailable(f"no worker is serving the {PREDICT_QUEUE!r} queue; start one with "
                                     "`dextr-backend worker`")
        retried = False
        try:
            job = self._enqueue(request, timeout)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    job.cancel()
                    raise ServiceTimeout(f"no answer from a worker within {timeout:g} s "
                                         f"({self.depth()} jobs waiting in {PREDICT_QUEUE!r}); "
                                         "add workers or raise DEXTR_PREDICT_TIMEOUT")
                result = job.latest_result(timeout=max(1, min(int(left), 1)))
                if result is not None:
                    if result.type == result.Type.SUCCESSFUL:
                        return result.return_value
                    raise ServiceUnavailable(f"the worker failed on this request: {_last_line(result.exc_string)}")
                if not self.workers():
                    raise ServiceUnavailable(f"no worker is serving the {PREDICT_QUEUE!r} queue any more "
                                             "(stopped or killed); start one with `dextr-backend worker`")
                if self._lost(job):
                    if retried:
                        raise ServiceUnavailable("the worker handling this request died twice; check the "
                                                 "worker logs (out of memory?)")
                    log.warning("worker died mid-job; retrying once", extra={"job": job.id})
                    retried = True
                    job = self._enqueue(request, deadline - time.monotonic())
        except redis.RedisError as exc:
            raise self._redis_down(exc) from None

    def _enqueue(self, request: dict, timeout: float) -> Job:
        ttl = max(1, int(timeout) + 1)
        return self.predict_queue.enqueue_call("dextr_backend.queue.jobs.predict", args=(request,),
                                               ttl=ttl, result_ttl=60, failure_ttl=300,
                                               timeout=max(5, int(timeout) + 5))

    def _lost(self, job: Job) -> bool:
        """Started by a worker that no longer exists (killed), or dropped from the queue."""
        try:
            job.refresh()                  # loads worker_name as well as the status
        except NoSuchJobError:
            return True
        status = job.get_status(refresh=False)
        if status == JobStatus.STARTED and job.worker_name:
            return not self.redis.exists(alive_key(job.worker_name))
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return True
        return status is None

    # ------------------------------------------------------------ training
    def enqueue_training(self, project: int, label_studio_url: str, api_key: str | None, **kwargs) -> dict:
        """One training job per project: a request while one waits is coalesced into it; a request
        while one runs schedules exactly one more run after it."""
        job_id = f"train-project-{int(project)}"
        try:
            job = Job.fetch(job_id, connection=self.redis) if self.redis.exists(f"rq:job:{job_id}") else None
            status = job.get_status(refresh=True) if job else None
            if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
                return {"status": "coalesced", "job": job_id}
            if status == JobStatus.STARTED:
                self.redis.set(TRAIN_AGAIN_KEY.format(project=int(project)), 1, ex=24 * 3600)
                return {"status": "scheduled after the running job", "job": job_id}
            if job is not None:
                job.delete()
            self.train_queue.enqueue_call("dextr_backend.queue.jobs.train_project",
                                          args=(int(project), label_studio_url, api_key), kwargs=kwargs,
                                          job_id=job_id, timeout=6 * 3600, result_ttl=7 * 24 * 3600,
                                          failure_ttl=7 * 24 * 3600)
            return {"status": "queued", "job": job_id}
        except redis.RedisError as exc:
            raise self._redis_down(exc) from None

    def count_annotation(self, project: int) -> int:
        """Shared across API processes: new or updated annotations of a project so far."""
        try:
            return int(self.redis.incr(f"dextr:annotations:{int(project)}"))
        except redis.RedisError as exc:
            raise self._redis_down(exc) from None

    def training_status(self) -> list[dict]:
        """Every project's latest training job: status, progress and result."""
        try:
            keys = sorted(k.decode() for k in self.redis.scan_iter("rq:job:train-project-*"))
            out = []
            for key in keys:
                job = Job.fetch(key.split(":", 2)[2], connection=self.redis)
                result = job.latest_result()
                out.append({"job": job.id, "project": job.args[0] if job.args else None,
                            "status": _status_name(job.get_status(refresh=True)),
                            "progress": dict(job.meta), "enqueued_at": _iso(job.enqueued_at),
                            "ended_at": _iso(job.ended_at),
                            "result": result.return_value if result is not None and
                            result.type == result.Type.SUCCESSFUL else None,
                            "error": _last_line(result.exc_string) if result is not None and
                            result.type != result.Type.SUCCESSFUL else None})
            return out
        except redis.RedisError as exc:
            raise self._redis_down(exc) from None


def _status_name(status) -> str:
    return getattr(status, "value", None) or (str(status) if status else "unknown")


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _last_line(text: str | None) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "unknown error"
