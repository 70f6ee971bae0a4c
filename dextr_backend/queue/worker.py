"""The rq worker of ``dextr-backend worker`` (:mod:`dextr_backend.cli.worker`): the model stays resident.

rq's default worker forks a child per job, which would reload the network every time and
breaks CUDA. This worker runs jobs in its own process (rq's ``SimpleWorker``), loads the model
once before taking jobs, and picks up a newly promoted weights version between jobs (the
resident predictor checks the store's version stamp per request).

Its heartbeat (``keys.ALIVE_PREFIX``, read by ``QueueClient.workers`` and ``/health``) is written
by the dequeue loop itself, after each blocking dequeue of at most ``DEQUEUE_SECONDS`` came back:
a worker that stops listening (stuck, stopped, or retrying a broken connection) drops out of
``/health`` within ``ALIVE_TTL`` seconds. Only while a job runs (a training job takes an hour)
does a side thread beat instead. The same loop hands on the jobs of dead workers
(``reaper.reap``) every ``reaper.SCAN_SECONDS``.

The Redis client is built with a socket timeout longer than the blocking dequeue, before anything
connects: with a shorter one (redis-py's default is 5 s) every idle dequeue fails, and rq backs off
for up to a minute at a time.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from rq.worker import SimpleWorker

from ..errors import DextrError
from ..redact import redact_url
from .keys import ALIVE_TTL, alive_key
from .reaper import SCAN_SECONDS, reap

log = logging.getLogger(__name__)

DEQUEUE_SECONDS = 1              # BLPOP timeout: one heartbeat per loop turn
SOCKET_TIMEOUT = 30              # longer than any blocking command this worker sends
JOB_BEAT_SECONDS = 1.0


def connect(url: str) -> redis.Redis:
    """The worker's Redis client: its read timeout comfortably longer than the blocking dequeue."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=SOCKET_TIMEOUT,
                                health_check_interval=10)


class DextrWorker(SimpleWorker):
    """A non-forking rq worker whose dequeue loop publishes the heartbeat and reaps dead workers."""

    max_connection_wait_time = 5.0     # after a Redis outage, listen again within seconds

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._served = ",".join(q.name for q in self.queues)
        self._reaped_at = 0.0

    @property
    def dequeue_timeout(self) -> int:
        return DEQUEUE_SECONDS

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """rq's dequeue, one blocking listen at a time, with a beat after each one that came back.

        rq's own loop retries a failing dequeue internally (with a backoff of up to
        ``max_connection_wait_time``) and would keep any beat written from inside it going."""
        if timeout is None or max_idle_time is not None:          # burst mode, or rq's idle limit
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        while True:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=timeout)
            try:
                self._beat()
            except (redis.ConnectionError, redis.TimeoutError):
                pass                                   # the next dequeue retries, with rq's backoff
            if result is not None or self._stop_requested:
                return result
            if time.monotonic() - self._reaped_at >= SCAN_SECONDS:
                self._reaped_at = time.monotonic()
                try:
                    reap(self.connection)
                except Exception as exc:  # noqa: BLE001 - never a reason to stop serving
                    log.warning("reaping dead workers' jobs failed", extra={"error": repr(exc)})

    def _beat(self) -> None:
        self.connection.set(alive_key(self.name), self._served, ex=ALIVE_TTL)

    def _beat_during_job(self, stop: threading.Event) -> None:
        while not stop.wait(JOB_BEAT_SECONDS):
            try:
                self._beat()
            except redis.RedisError as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)})

    def execute_job(self, job, queue):
        stop = threading.Event()
        beat = threading.Thread(target=self._beat_during_job, args=(stop,), name="dextr-job-heartbeat",
                                daemon=True)
        beat.start()
        try:
            self._beat()
            return super().execute_job(job, queue)
        finally:
            stop.set()
            beat.join(timeout=2)

    def teardown(self):
        try:
            self.connection.delete(alive_key(self.name))
        except redis.RedisError:
            pass
        super().teardown()


def wait_for_redis(connection: redis.Redis, url: str, seconds: float) -> redis.Redis:
    """Wait up to ``seconds`` for Redis to answer, saying so once a second: in a compose stack the
    worker may start before Redis does (Podman runs no healthchecks without systemd)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            connection.ping()
            return connection
        except redis.RedisError as exc:
            if time.monotonic() >= deadline:
                raise DextrError(f"cannot reach Redis at {redact_url(url)} after {seconds:g} s: {exc}") from None
            log.warning("waiting for Redis", extra={"redis": redact_url(url), "error": str(exc)})
            time.sleep(1.0)
