"""Redis + rq: the queues, the jobs the workers run, and the client the API waits with."""

PREDICT_QUEUE = "dextr-predict"
TRAIN_QUEUE = "dextr-train"


def redis_url(explicit: str | None, purpose: str) -> str:
    """The Redis URL from a ``--redis-url`` flag or ``$REDIS_URL``; a clear error without one."""
    import os

    from ..errors import InputError

    url = explicit or os.environ.get("REDIS_URL")
    if not url:
        raise InputError(f"{purpose}: set REDIS_URL (e.g. redis://localhost:6379/0) or pass --redis-url")
    return url
