"""``dextr-backend worker``: rq workers that keep the model resident.

rq's default worker forks a child per job, which would reload the network every time and
breaks CUDA. This worker runs jobs in its own process (rq's ``SimpleWorker``), loads the model
once before taking jobs, picks up a newly promoted weights version between jobs (the
Segmenter checks the store's current version per request), and publishes a short-lived
heartbeat key so the API notices within seconds when a worker is killed mid-job.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
import uuid

import redis
from rq.worker import SimpleWorker

from ..errors import DextrError, InputError
from . import PREDICT_QUEUE, TRAIN_QUEUE, redis_url

log = logging.getLogger(__name__)

ALIVE_PREFIX = "dextr:alive:"
HEARTBEAT_SECONDS = 1.0
ALIVE_TTL_SECONDS = 3


def alive_key(name: str) -> str:
    return ALIVE_PREFIX + name


class DextrWorker(SimpleWorker):
    """A non-forking rq worker with a fast heartbeat."""

    def _beat(self, stop: threading.Event) -> None:
        queues = ",".join(q.name for q in self.queues)
        while not stop.is_set():
            try:
                self.connection.set(alive_key(self.name), queues, ex=ALIVE_TTL_SECONDS)
            except redis.RedisError as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)})
            stop.wait(HEARTBEAT_SECONDS)

    def work(self, *args, **kwargs):
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(stop,), name="dextr-heartbeat", daemon=True)
        beat.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            stop.set()
            beat.join(timeout=2)
            try:
                self.connection.delete(alive_key(self.name))
            except redis.RedisError:
                pass


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a queue worker (model stays loaded)",
                       description="Serve the Redis queues: 'dextr-predict' (interactive and batch masks) "
                                   "and/or 'dextr-train' (retraining). Needs REDIS_URL.")
    p.add_argument("--queues", default=PREDICT_QUEUE,
                   help=f"comma-separated queues to serve (default: {PREDICT_QUEUE}; training: {TRAIN_QUEUE})")
    p.add_argument("--redis-url", default=None, help="Redis URL (default: $REDIS_URL)")
    p.add_argument("--name", default=None, help="worker name (default: host-pid-random)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..settings import Settings

    url = redis_url(args.redis_url, "the worker needs Redis")
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = set(queues) - {PREDICT_QUEUE, TRAIN_QUEUE}
    if unknown:
        raise InputError(f"unknown queue(s) {', '.join(sorted(unknown))}; known: {PREDICT_QUEUE}, {TRAIN_QUEUE}")
    conn = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=10)
    try:
        conn.ping()
    except redis.RedisError as exc:
        raise DextrError(f"cannot reach Redis at {url}: {exc}") from None
    if PREDICT_QUEUE in queues:
        from ..labelstudio import predict as predict_module

        predict_module._SEGMENTER = predict_module.Segmenter(Settings.from_env())
        version = predict_module._SEGMENTER.predictor().version   # load and keep the model now
        log.info("model loaded", extra={"version": version})
    name = args.name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    worker = DextrWorker(queues, connection=conn, name=name)
    log.info("worker starting", extra={"worker": name, "queues": queues})
    worker.work(burst=args.burst, with_scheduler=False)
    return 0
