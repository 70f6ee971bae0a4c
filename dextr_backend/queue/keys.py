"""Every Redis key the queue writes besides rq's own: name, type and lifetime in one place.

Nothing here holds a secret: a training job names its project only, and workers take Label
Studio credentials from their own settings (see ``jobs.train_project``).
"""

from __future__ import annotations

DAY = 24 * 3600

# string "queue,queue": the worker's dequeue loop is listening (or it is running a job). TTL ALIVE_TTL.
ALIVE_PREFIX = "dextr:alive:"
ALIVE_TTL = 3

# counter: new or updated annotations of a project, shared by every API process. No TTL.
ANNOTATIONS = "dextr:annotations:{project}"

# hash: one project's training state machine (see runs.py): state idle|queued|running, job,
# again 0|1, owner (run id allowed to write), worker, jobs/runs counters, queued_at, since, note.
TRAIN = "dextr:train:{project}"
# set: projects that have a TRAIN hash, so status needs no SCAN.
TRAIN_PROJECTS = "dextr:train:projects"
# list: run ids of a project, newest first, trimmed to HISTORY.
TRAIN_RUNS = "dextr:train:{project}:runs"
# string: one run's JSON record (stages, progress, result, note).
TRAIN_RUN = "dextr:train:{project}:run:{run}"
TRAIN_TTL = 30 * DAY          # TRAIN, TRAIN_RUNS and TRAIN_RUN; refreshed on every write
HISTORY = 10                  # runs kept per project

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


def train_key(project: int) -> str:
    return TRAIN.format(project=int(project))


def runs_key(project: int) -> str:
    return TRAIN_RUNS.format(project=int(project))


def run_key(project: int, run: str) -> str:
    return TRAIN_RUN.format(project=int(project), run=run)
