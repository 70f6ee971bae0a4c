"""Whether a worker is alive: its heartbeat, else a Redis connection open under its name.

The heartbeat (``keys.ALIVE_PREFIX``) lapses when a worker is killed, but also while it is only
starved: a long computation holding Python's lock, a worker paused by SIGSTOP, a slow swap. Its
connections stay open then, and Redis lists them under the worker's name, which every connection
of a worker sets as it connects (``queue.worker.connect``); a killed worker's connections close at
once. So a job is taken from a worker (re-queued or failed) only when both signs are gone: a job
that is still running is never run a second time beside it.
"""

from __future__ import annotations

import redis

from .keys import alive_key


def connected(conn: redis.Redis) -> set[str] | None:
    """Names of the clients connected to Redis, or None where CLIENT LIST is not allowed (then the
    heartbeat alone decides)."""
    try:
        return {c["name"] for c in conn.client_list() if c.get("name")}
    except redis.ResponseError:
        return None


def heartbeat(conn: redis.Redis, worker: str) -> bool:
    return bool(worker) and bool(conn.exists(alive_key(worker)))


def alive(conn: redis.Redis, worker: str) -> bool:
    """The worker's heartbeat is fresh, or one of its connections is open."""
    if heartbeat(conn, worker):
        return True
    names = connected(conn)
    return bool(worker) and names is not None and worker in names
