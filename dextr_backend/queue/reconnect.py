"""A worker's Redis client waits out an outage instead of failing.

rq's loop quits on a Redis error outside its blocking dequeue ("found an unhandled exception,
quitting"), and a job that finished while Redis was away had no way to record its answer. So
every command of a worker's client is retried, with backoff, until Redis answers again: the
process stays, the job's result is written once Redis is back, and the loop listens again.

Each outage is logged twice, once as it starts ("redis lost": a command failed twice running)
and once as it ends ("redis back": a connection was made again, handshake and all). A single
stale socket that reconnects at once (as every pooled connection does once after a restart) is
no outage and says nothing. A worker that is asked to stop during an
outage gives up after :data:`STOP_GRACE_SECONDS`, so ``docker stop`` still ends it.
"""

from __future__ import annotations

import logging
import threading
import time

from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry

from ..redact import redact_url, shorten

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.25  # seconds: 0.5, 1, 2, 4, 4, ...
BACKOFF_CAP = 4.0
STOP_GRACE_SECONDS = 5.0


class Patience(Retry):
    """A redis-py retry policy: forever (until a stop is requested), logging each outage once.
    Give :meth:`connected` to the client as its ``redis_connect_func``, so that it can tell when
    Redis is back. One object serves every connection of a client, so redis-py's deep copies
    return it as is."""

    def __init__(self, url: str):
        super().__init__(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), -1, (ConnectionError, TimeoutError))
        self.url = redact_url(url)
        self.outages = 0  # ended outages, so a caller can tell that one happened
        self._lost_at: float | None = None
        self._stop_at: float | None = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo) -> Patience:
        return self

    def stop_requested(self) -> None:
        """From now on, give up once an outage has lasted :data:`STOP_GRACE_SECONDS` more."""
        self._stop_at = time.monotonic() + STOP_GRACE_SECONDS

    def connected(self, connection) -> None:
        """redis-py's handshake on a new connection (AUTH, SELECT, CLIENT SETNAME), then "redis back"."""
        connection.on_connect()
        if self._lost_at is not None:
            self._came_back()

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        """redis-py's loop (its signature), with the outage bookkeeping around each attempt."""
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                if failures >= 2:
                    self._went_away(error)
                if self._stop_at is not None and time.monotonic() >= self._stop_at:
                    raise
                time.sleep(self._backoff.compute(failures))

    def _went_away(self, error: Exception) -> None:
        with self._lock:
            if self._lost_at is None:
                self._lost_at = time.monotonic()
                log.warning(
                    "redis lost",
                    extra={"redis": self.url, "error": shorten(str(error), 200), "retrying_every_s": BACKOFF_CAP},
                )

    def _came_back(self) -> None:
        with self._lock:
            if self._lost_at is not None:
                log.warning(
                    "redis back", extra={"redis": self.url, "after_s": round(time.monotonic() - self._lost_at, 1)}
                )
                self._lost_at = None
                self.outages += 1
