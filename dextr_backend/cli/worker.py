"""``dextr-backend worker``: serve the Redis queues with the model loaded once, before the first job.

The worker itself (heartbeat, reaping, no fork per job) is :class:`dextr_backend.queue.worker.DextrWorker`.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import uuid

import redis

from ..errors import InputError
from ..queue import PREDICT_QUEUE, TRAIN_QUEUE, redis_url
from ..queue.worker import DextrWorker, check_name, claim_name, connect, wait_for_redis
from .options import add_engine

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="run a queue worker (model stays loaded)",
        description="Serve the Redis queues: 'dextr-predict' (interactive and batch masks) "
        "and/or 'dextr-train' (retraining). Needs REDIS_URL.",
    )
    p.add_argument(
        "--queues",
        default=PREDICT_QUEUE,
        help=f"comma-separated queues to serve (default: {PREDICT_QUEUE}; training: {TRAIN_QUEUE})",
    )
    p.add_argument("--redis-url", default=None, help="Redis URL (default: $REDIS_URL)")
    p.add_argument(
        "--name",
        default=None,
        help="worker name (default: host-pid-random); a fixed name is taken over from a dead worker "
        "(after kill -9 or a crash), never from a live one",
    )
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: $DEXTR_THREADS, else the CPUs this process may use)",
    )
    add_engine(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..settings import Settings, share_engine
    from ..threads import configure_threads

    if args.engine is not None:
        share_engine(args.engine)  # the resident predictor reads its Settings from the environment
    settings = Settings.from_env()
    url = redis_url(args.redis_url or settings.redis_url, "the worker needs Redis")
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = set(queues) - {PREDICT_QUEUE, TRAIN_QUEUE}
    if unknown:
        raise InputError(f"unknown queue(s) {', '.join(sorted(unknown))}; known: {PREDICT_QUEUE}, {TRAIN_QUEUE}")
    threads = configure_threads(args.threads if args.threads is not None else settings.threads)
    name = check_name(args.name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}")
    # A plain client to wait for Redis and claim the name with: the worker's own waits out outages
    # for good, and carries the name that the claim looks for.
    probe = wait_for_redis(
        redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10), url, settings.redis_wait
    )
    claim_name(probe, name)
    probe.close()
    worker = DextrWorker(queues, connection=connect(url, name), name=name, log_job_description=False)
    if PREDICT_QUEUE in queues:
        from ..service import resident

        loaded = resident.shared(settings).get()  # load and keep the model now
        log.info("model loaded", extra={"version": loaded.version, "engine": loaded.engine_name})
    log.info("worker starting", extra={"worker": name, "queues": queues, "threads": threads})
    worker.work(burst=args.burst, with_scheduler=False)
    return 0
