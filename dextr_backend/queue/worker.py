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
for up to a minute at a time. It waits out a Redis outage (:mod:`.reconnect`) instead of failing,
so neither an idle worker nor one finishing a job quits when Redis goes away; and every one of its
connections carries the worker's name, which tells a paused worker from a dead one (:mod:`.liveness`).

A worker's name is its own: ``claim_name`` takes over the name of a dead registration (its
heartbeat lapsed, or its pid is gone on this host), and hands on that one's jobs; a name held by
a live worker is a clear error.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from typing import cast

import redis
from rq import worker_registration
from rq.worker import BaseWorker, SimpleWorker

from ..errors import DextrError, InputError
from ..redact import redact_url
from . import liveness
from .keys import ALIVE_TTL, alive_key
from .reaper import SCAN_SECONDS, reap, reap_worker
from .reconnect import Patience

log = logging.getLogger(__name__)

DEQUEUE_SECONDS = 1  # BLPOP timeout: one heartbeat per loop turn
SOCKET_TIMEOUT = 30  # longer than any blocking command this worker sends
JOB_BEAT_SECONDS = 1.0


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,99}")


class NameTaken(DextrError):
    """Another worker, alive, already serves under this name."""


def check_name(name: str) -> str:
    """A worker name Redis can carry as a client name: letters, digits and ``._:@+-``, 100 at most."""
    if not NAME.fullmatch(name or ""):
        raise InputError(f"worker name {name[:100]!r}: use letters, digits and . _ : @ + - (at most 100)")
    return name


def connect(url: str, name: str | None = None) -> redis.Redis:
    """The worker's Redis client: its read timeout comfortably longer than the blocking dequeue,
    every command retried until Redis answers (:class:`.reconnect.Patience`), and every connection
    named after the worker."""
    patience = Patience(url)
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        socket_timeout=SOCKET_TIMEOUT,
        health_check_interval=10,
        client_name=name,
        retry=patience,
        redis_connect_func=patience.connected,
    )


class DextrWorker(SimpleWorker):
    """A non-forking rq worker whose dequeue loop publishes the heartbeat and reaps dead workers."""

    max_connection_wait_time = 5.0  # after a Redis outage, listen again within seconds

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._served = ",".join(q.name for q in self.queues)
        self._reaped_at = 0.0
        retry = self.connection.get_retry()
        self._patience = retry if isinstance(retry, Patience) else None
        self._outages = 0
        self._reaping = False

    def request_stop(self, signum, frame):
        """rq's warm shutdown; during a Redis outage, give up waiting for Redis soon after."""
        if self._patience is not None:
            self._patience.stop_requested()
        super().request_stop(signum, frame)

    def _shutdown(self):
        """rq's, which stops an idle worker by raising from the signal handler wherever the main
        thread is. A reap must not be cut short (a job marked as handed on, and not handed on, waits
        for the mark to expire): during one, the request is kept and the loop stops after it."""
        if self._reaping:
            self._stop_requested = True
            return
        super()._shutdown()

    # rq's (non-public) handler for its command channel's thread logs an error every 2 s of an
    # outage; the outage is logged once already (reconnect.Patience), so this one waits quietly.
    def _pubsub_exception_handler(self, exc, pubsub, pubsub_thread) -> None:
        if not isinstance(exc, redis.ConnectionError):
            super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
        time.sleep(2.0)

    def unsubscribe(self):
        """rq's, bounded. Once unsubscribed, redis-py's thread for rq's command channel may sleep up to
        rq's ``sleep_time`` (60 s) waiting to be subscribed again, and rq's ``stop()`` waits for it:
        a stop request then took up to a minute (``docker stop`` kills it after 10 s). Stop it first,
        wait a second at most, and close its connection (which unsubscribes)."""
        if self.pubsub_thread:
            self.pubsub_thread.stop(timeout=1)
            self.pubsub.close()

    def register_birth(self):
        """rq's, with its error for a name in use as a clear one (see :func:`claim_name`)."""
        try:
            super().register_birth()
        except ValueError as exc:
            raise NameTaken(f"{exc}: pick another --name, or stop that worker first") from None

    @property
    def dequeue_timeout(self) -> int:
        return DEQUEUE_SECONDS

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """rq's dequeue, one blocking listen at a time, with a beat after each one that came back.

        rq's own loop retries a failing dequeue internally (with a backoff of up to
        ``max_connection_wait_time``) and would keep any beat written from inside it going."""
        if timeout is None or max_idle_time is not None:  # burst mode, or rq's idle limit
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        while True:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=timeout)
            try:
                self._beat()
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # the next dequeue retries, with rq's backoff
            if result is not None or self._stop_requested:
                return result
            if time.monotonic() - self._reaped_at >= SCAN_SECONDS:
                self._reaped_at = time.monotonic()
                self._reaping = True
                try:
                    reap(self.connection)
                except Exception as exc:  # noqa: BLE001 - never a reason to stop serving
                    log.warning("reaping dead workers' jobs failed", extra={"error": repr(exc)})
                finally:
                    self._reaping = False
                if self._stop_requested:  # asked during the reap
                    return None

    def _beat(self) -> None:
        self.connection.set(alive_key(self.name), self._served, ex=ALIVE_TTL)
        if self._patience is not None and self._patience.outages != self._outages:
            self._outages = self._patience.outages
            self._register_again()

    def _register_again(self) -> None:
        """After an outage: rq's registration again, if Redis came back without it (no persistence)."""
        if not self.connection.hexists(self.key, "birth"):
            with self.connection.pipeline() as pipe:
                pipe.hset(self.key, mapping=self.serialize())
                worker_registration.register(self, pipe)
                pipe.expire(self.key, self.worker_ttl + 60)
                pipe.execute()
            log.info("registered again after Redis came back empty", extra={"worker": self.name})

    def _beat_during_job(self, stop: threading.Event) -> None:
        while not stop.wait(JOB_BEAT_SECONDS):
            try:
                self._beat()
            except redis.RedisError as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)})

    def execute_job(self, job, queue):
        stop = threading.Event()
        beat = threading.Thread(target=self._beat_during_job, args=(stop,), name="dextr-job-heartbeat", daemon=True)
        beat.start()
        try:
            self._beat()
            return super().execute_job(job, queue)
        finally:
            stop.set()
            beat.join(timeout=2)

    def handle_job_success(self, *args, **kwargs):
        """rq's, after a beat: once an answer is visible, so is its worker, even when the side
        thread's beat is still waiting out the end of a Redis outage."""
        self._beat()
        return super().handle_job_success(*args, **kwargs)

    def handle_job_failure(self, *args, **kwargs):
        self._beat()
        return super().handle_job_failure(*args, **kwargs)

    def teardown(self):
        try:
            self.connection.delete(alive_key(self.name))
            super().teardown()
        except redis.RedisError as exc:  # stopping during an outage: the keys expire by themselves
            log.warning("stopped without unregistering: Redis is unreachable", extra={"error": str(exc)[:200]})


def claim_name(conn: redis.Redis, name: str, wait: float = ALIVE_TTL + 1.0) -> list[str]:
    """Make ``name`` free for this process, or raise :class:`NameTaken`.

    A registration under ``name`` is dead when its pid is gone on this host, or when neither its
    heartbeat nor a connection under its name shows up within ``wait`` seconds (a heartbeat
    lives ``ALIVE_TTL`` seconds). A dead one's started jobs are handed on now and its
    registration removed; returns one line per job handed on. ``conn`` must not carry the name."""
    raw = cast("dict[bytes, bytes]", conn.hgetall(BaseWorker.redis_worker_namespace_prefix + name))
    info = {k.decode(): v.decode() for k, v in raw.items()}
    registered = bool(info) and "death" not in info
    if not registered and not liveness.alive(conn, name):
        return []
    host, pid = info.get("hostname", "?"), int(info.get("pid") or 0)
    gone_here = host == socket.gethostname() and pid > 0 and (pid == os.getpid() or not _running(pid))
    if not gone_here:
        deadline = time.monotonic() + wait
        while liveness.alive(conn, name):
            if time.monotonic() >= deadline:
                raise NameTaken(
                    f"worker name {name!r} is in use by a live worker (pid {pid} on {host}); "
                    "pick another --name, or stop that worker first"
                )
            time.sleep(0.25)
    handed = reap_worker(conn, name)
    log.warning(
        "took over the name of a dead worker",
        extra={"worker": name, "dead_pid": pid, "host": host, "jobs_handed_on": handed},
    )
    return handed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
