"""What the API does with the queue: run a job on a worker and wait for it, with a deadline;
report depth and workers; hand on dead workers' jobs. A project's training runs live in
``dextr_backend.training_runs``; the jobs themselves are the caller's functions.

Failure is always an answer, never a hang: Redis down -> ServiceUnavailable; no worker alive ->
ServiceUnavailable; a worker killed mid-job -> the job is re-enqueued once, then
ServiceUnavailable; out of time -> ServiceTimeout saying how many jobs were waiting.

A request already queued rides out a Redis outage until its deadline: the worker keeps its
answer until Redis is back (``reconnect``). And a job is taken as lost only when its worker
has been dead (no heartbeat and no open connection, ``liveness``) for ``LOST_GRACE_SECONDS``:
a worker that is only starved, or still reconnecting after an outage, is not run beside.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from ..errors import ServiceTimeout, ServiceUnavailable
from ..redact import redact_url
from . import PREDICT_QUEUE, TRAIN_QUEUE, liveness
from .keys import ALIVE_PREFIX
from .reaper import LOST
from .reconnect import BACKOFF_CAP

log = logging.getLogger(__name__)

LOST_GRACE_SECONDS = BACKOFF_CAP + 2.0  # a worker reconnecting after an outage beats again within this


class QueueClient:
    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        # Fail fast (an outage is an answer, see above), unlike redis-py's default of 3 slow retries.
        self.redis = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=2,
            socket_timeout=10,
            health_check_interval=10,
            retry=Retry(ExponentialBackoff(0.2, 0.05), 1),
        )
        self.predict_queue = Queue(PREDICT_QUEUE, connection=self.redis)
        self.train_queue = Queue(TRAIN_QUEUE, connection=self.redis)
        self._alive, self._alive_checked = False, 0.0
        self._lost_at: float | None = None  # when this process last found Redis unreachable

    def _redis_ok(self) -> None:
        if self._lost_at is not None:
            log.warning(
                "redis back",
                extra={"redis": redact_url(self.redis_url), "after_s": round(time.monotonic() - self._lost_at, 1)},
            )
            self._lost_at = None

    def _redis_down(self, exc: Exception) -> ServiceUnavailable:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.warning("redis lost", extra={"redis": redact_url(self.redis_url), "error": str(exc)[:200]})
        return ServiceUnavailable(
            f"Redis is unreachable at {redact_url(self.redis_url)} ({exc.__class__.__name__}); "
            "predictions resume by themselves once it is back"
        )

    # ------------------------------------------------------------ health
    def ping(self) -> None:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise self._redis_down(exc) from None
        self._redis_ok()

    def workers(self, queue: str = PREDICT_QUEUE) -> list[str]:
        """Names of workers with a fresh heartbeat serving ``queue``."""
        try:
            return self._serving(queue)
        except redis.RedisError as exc:
            raise self._redis_down(exc) from None

    def _serving(self, queue: str = PREDICT_QUEUE) -> list[str]:
        names = []
        for key in self.redis.scan_iter(ALIVE_PREFIX + "*"):
            served = cast(bytes, self.redis.get(key) or b"").decode().split(",")
            if queue in served:
                names.append(key.decode()[len(ALIVE_PREFIX) :])
        return sorted(names)

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
    def call(self, job_function: Callable[[dict], dict], request: dict, timeout: float) -> dict:
        """Run ``job_function(request)`` on a predict worker and return what it returned (for
        ``labelstudio.jobs.segment``: ``ok`` or ``error``). A worker that dies mid-job is replaced
        once; out of time is :class:`ServiceTimeout`, no worker or no Redis :class:`ServiceUnavailable`."""
        deadline = time.monotonic() + timeout
        if not self._workers_recently():
            raise ServiceUnavailable(
                f"no worker is serving the {PREDICT_QUEUE!r} queue; start one with `dextr-backend worker`"
            )
        try:
            job = self._enqueue(job_function, request, timeout)
        except redis.RedisError as exc:
            raise self._redis_down(exc) from None
        retried, watch = False, _Watch()
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    waiting = self._waiting(job)  # counted before the cancel takes ours out
                    job.cancel()
                    raise ServiceTimeout(
                        f"no answer from a worker within {timeout:g} s ({waiting}); "
                        "add workers or raise DEXTR_PREDICT_TIMEOUT"
                    )
                result = job.latest_result(timeout=1)  # a second at a time: the deadline and the worker are watched
                failed = result is not None and result.type != result.Type.SUCCESSFUL
                lost = failed and result is not None and LOST in (result.exc_string or "")  # handed on by a reaper
                if result is not None and not lost:
                    if result.type == result.Type.SUCCESSFUL:
                        return cast(dict, result.return_value)  # what job_function returned
                    raise ServiceUnavailable(f"the worker failed on this request: {_last_line(result.exc_string)}")
                state = "lost" if lost else watch.state(self.redis, job)
                self._redis_ok()
                if state == "waiting" and not self._serving():
                    raise ServiceUnavailable(
                        f"no worker is serving the {PREDICT_QUEUE!r} queue any more "
                        "(stopped or killed); start one with `dextr-backend worker`"
                    )
                if state == "lost":
                    if retried:
                        raise ServiceUnavailable(
                            "the worker handling this request died twice; check the worker logs (out of memory?)"
                        )
                    log.warning("worker died mid-job; retrying once", extra={"job": job.id})
                    retried, watch = True, _Watch()
                    job = self._enqueue(job_function, request, deadline - time.monotonic())
            except redis.RedisError as exc:  # ride it out: the worker keeps the answer until Redis is back
                if deadline - time.monotonic() <= 0:
                    raise self._redis_down(exc) from None
                self._redis_down(exc)
                watch.outage()
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _enqueue(self, job_function: Callable[[dict], dict], request: dict, timeout: float) -> Job:
        ttl = max(1, int(timeout) + 1)
        return self.predict_queue.enqueue_call(
            job_function,
            args=(request,),
            description=job_function.__name__,
            ttl=ttl,
            result_ttl=60,
            failure_ttl=300,
            timeout=max(5, int(timeout) + 5),
        )

    def _waiting(self, job: Job, limit: int = 1000) -> str:
        """The queue as this request saw it when its time ran out: live jobs only (ids of expired
        jobs linger in rq's list), this one included while it still waited."""
        ids = cast("list[bytes]", self.redis.lrange(self.predict_queue.key, 0, limit - 1))
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(Job.key_for(job_id.decode()))
            live = {job_id.decode() for job_id, exists in zip(ids, pipe.execute()) if exists}
        jobs = f"{len(live)} job{'s' if len(live) != 1 else ''}"
        if job.id not in live:
            return f"a worker was still on it; {jobs} more waiting in {PREDICT_QUEUE!r}"
        if len(live) == 1:
            return f"this request was waiting in {PREDICT_QUEUE!r} and no worker took it"
        return f"{jobs} waiting in {PREDICT_QUEUE!r}, this one included"

    # ------------------------------------------------------------ workers that died
    def reap_dead_workers(self) -> None:
        """Hand on the jobs of training workers that stopped answering (the reaper): asked before a
        training request, so a press never waits behind a dead worker's run."""
        from .reaper import reap

        try:
            reap(self.redis, (TRAIN_QUEUE,))
        except redis.RedisError as exc:
            raise self._redis_down(exc) from None
        except Exception as exc:  # noqa: BLE001 - a request must not fail because of the cleanup
            log.warning("reaping dead workers' jobs failed", extra={"error": repr(exc)})


class _Watch:
    """How one waiting request sees its job: "running", "waiting" (queued) or "lost" (its worker
    dead for ``LOST_GRACE_SECONDS``, counted again after a Redis outage; or the job failed,
    stopped or vanished)."""

    def __init__(self):
        self._dead_since: float | None = None

    def state(self, conn: redis.Redis, job: Job) -> str:
        try:
            job.refresh()  # loads worker_name as well as the status
        except NoSuchJobError:
            return "lost"
        status = job.get_status(refresh=False)
        if status == JobStatus.STARTED and job.worker_name:
            if liveness.alive(conn, job.worker_name):
                self._dead_since = None
                return "running"
            self._dead_since = self._dead_since or time.monotonic()
            return "lost" if time.monotonic() - self._dead_since >= LOST_GRACE_SECONDS else "running"
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED) or status is None:
            return "lost"
        return "waiting"

    def outage(self) -> None:
        self._dead_since = None


def _last_line(text: str | None) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "unknown error"
