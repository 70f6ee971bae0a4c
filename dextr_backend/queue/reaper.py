"""Jobs whose worker stopped answering, found from the heartbeat within a minute.

rq itself notices a dead worker's job only when its started-registry entry expires (the job
timeout + 60 s: six hours for training), and lists the dead worker as busy until then. Here a
started execution whose worker is not alive (no heartbeat and no open connection: see
:mod:`.liveness`, so a starved or paused worker is never robbed of its job) becomes a suspect;
if it is still not alive ``GRACE_SECONDS`` later, one reaper claims it (SET NX) and

- requeues a training job at the front of its queue (at most ``MAX_REQUEUES`` times, then fails
  it), so a restarted worker resumes it from the run's checkpoint; in the same transaction the
  training run is told (``TrainingRuns.job_lost``), and the project's status says "requeued after
  worker X stopped answering";
- fails a prediction, so the waiting API request retries once or answers 503 at once;
- removes the dead worker from rq's registry.

Every worker runs ``reap`` from its dequeue loop every ``SCAN_SECONDS``; the API runs it on
*Start Training*; a worker that takes over the name of a dead one (``worker.claim_name``) hands
on that one's jobs at once with ``reap_worker``.
"""

from __future__ import annotations

import logging
import time

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.registry import StartedJobRegistry
from rq.worker import BaseWorker

from ..training_runs import TrainingRuns
from . import PREDICT_QUEUE, TRAIN_QUEUE
from .keys import REAPED, REAPED_TTL, SUSPECT, SUSPECT_TTL, alive_key
from .liveness import alive

log = logging.getLogger(__name__)

SCAN_SECONDS = 10.0
GRACE_SECONDS = 8.0
MAX_REQUEUES = 2
LOST = "stopped answering"  # in a failed prediction's error: the API retries such a job once


def reap(conn: redis.Redis, queue_names=(PREDICT_QUEUE, TRAIN_QUEUE)) -> list[str]:
    """Hand on the started jobs of dead workers; returns one line per job handled."""
    done = []
    for name, job, execution_id, worker in _started(conn, queue_names):
        composite = f"{job.id}:{execution_id}"
        if alive(conn, worker):
            conn.delete(SUSPECT.format(execution=composite))
            continue
        if conn.set(SUSPECT.format(execution=composite), time.time(), nx=True, ex=SUSPECT_TTL):
            continue  # first sighting: look again later
        first = float(conn.get(SUSPECT.format(execution=composite)) or time.time())
        if time.time() - first < GRACE_SECONDS:
            continue
        if conn.set(REAPED.format(execution=composite), worker, nx=True, ex=REAPED_TTL):  # else another has it
            done.append(_hand_on(conn, Queue(name, connection=conn), job, execution_id, worker))
    return done


def reap_worker(conn: redis.Redis, worker: str, queue_names=(PREDICT_QUEUE, TRAIN_QUEUE)) -> list[str]:
    """Hand on every started job of ``worker`` now, and forget it: the caller knows it is dead."""
    done = [
        _hand_on(conn, Queue(name, connection=conn), job, execution_id, worker)
        for name, job, execution_id, owner in _started(conn, queue_names)
        if owner == worker
        and conn.set(REAPED.format(execution=f"{job.id}:{execution_id}"), worker, nx=True, ex=REAPED_TTL)
    ]
    with conn.pipeline() as pipe:
        _forget_worker(pipe, worker)
        pipe.delete(alive_key(worker))
        pipe.execute()
    return done


def _started(conn: redis.Redis, queue_names):
    """``(queue name, job, execution id, worker)`` of every started execution of ``queue_names``."""
    for name in queue_names:
        registry = StartedJobRegistry(name, connection=conn)
        for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
            try:
                job = Job.fetch(job_id, connection=conn)
            except NoSuchJobError:
                conn.zrem(registry.key, f"{job_id}:{execution_id}")
                continue
            if job.get_status(refresh=False) == JobStatus.STARTED and job.worker_name:
                yield name, job, execution_id, job.worker_name


def _hand_on(conn: redis.Redis, queue: Queue, job: Job, execution_id: str, worker: str) -> str:
    training = queue.name == TRAIN_QUEUE
    requeues = int(job.meta.get("requeues", 0))
    requeue = training and requeues < MAX_REQUEUES
    note = (
        f"requeued after worker {worker} {LOST}"
        if requeue
        else f"failed: worker {worker} {LOST}" + (" (its workers died too often)" if training else "")
    )
    with conn.pipeline() as pipe:
        while True:
            try:
                if training:
                    TrainingRuns(conn).job_lost(pipe, job, requeue, note)
                else:
                    pipe.multi()
                Execution(execution_id, job.id, connection=conn, worker_name=worker).delete(job, pipe)
                _forget_worker(pipe, worker)
                if requeue:
                    job.meta["requeues"] = requeues + 1
                    queue.enqueue_job(job, pipeline=pipe, at_front=True)
                else:
                    record_job_failure(job, note, pipe)
                pipe.execute()
                break
            except redis.WatchError:
                pipe.reset()
    log.warning("job handed on", extra={"job": job.id, "queue": queue.name, "dead_worker": worker, "note": note})
    return f"{job.id}: {note}"


def _forget_worker(pipe, worker: str) -> None:
    """rq's registration of a dead worker (otherwise listed as busy until its key expires)."""
    key = BaseWorker.redis_worker_namespace_prefix + worker
    pipe.delete(key)
    pipe.srem(BaseWorker.redis_workers_keys, key)
    for name in (PREDICT_QUEUE, TRAIN_QUEUE):
        pipe.srem(f"rq:workers:{name}", key)
