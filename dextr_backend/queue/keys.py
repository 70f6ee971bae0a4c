"""Every Redis key the queue writes besides rq's own: name, type and lifetime in one place. A
project's training runs and its annotation counter have theirs in ``dextr_backend.training_runs``.

Nothing here holds a secret: a training job names its project only, and workers take Label
Studio credentials from their own settings (see ``jobs.train_project``).
"""

from __future__ import annotations

DAY = 24 * 3600

# string "queue,queue": the worker's dequeue loop is listening (or it is running a job). TTL ALIVE_TTL.
ALIVE_PREFIX = "dextr:alive:"
ALIVE_TTL = 3

# string: when a started execution was first seen without its worker's heartbeat. TTL SUSPECT_TTL.
SUSPECT = "dextr:suspect:{execution}"
SUSPECT_TTL = 120
# string: the dead worker's name; set NX by the one reaper that handles that execution. TTL 1 day.
REAPED = "dextr:reaped:{execution}"
REAPED_TTL = DAY


# bytes: a task image the API fetched for a queued request, so that no worker waits on the network
# for it (labelstudio.images). Named by a hash of Label Studio, token and URL. TTL: the request's
# time and a minute, renewed while annotators keep clicking on the picture.
STAGED_IMAGE = "dextr:image:{digest}"


def alive_key(worker: str) -> str:
    return ALIVE_PREFIX + worker
