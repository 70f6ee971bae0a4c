"""Redis + rq as transport: the queue names, the client the API enqueues and waits with, the
worker that keeps a model resident, and the reaper that hands on a dead worker's jobs. It knows
no job bodies (callers pass the functions to run: ``dextr_backend.labelstudio.jobs``) and no Label
Studio projects: a project's training runs live in ``dextr_backend.training_runs``."""

PREDICT_QUEUE = "dextr-predict"
TRAIN_QUEUE = "dextr-train"


def redis_url(url: str | None, purpose: str) -> str:
    """``url`` (a ``--redis-url`` flag, else the settings' ``REDIS_URL``), or a clear error without one."""
    from ..errors import InputError

    if not url:
        raise InputError(f"{purpose}: set REDIS_URL (e.g. redis://localhost:6379/0) or pass --redis-url")
    return url
