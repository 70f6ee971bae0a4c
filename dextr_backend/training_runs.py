"""A Label Studio project's training runs, in one home: their state machine in Redis, the requests
that start or coalesce them, the worker's side of a run, what happens to a run whose worker died, the
annotation counter of ``DEXTR_TRAIN_EVERY`` and the status with each project's recent runs. The
webhook, *Start Training*, ``train-status``, the worker's job (``labelstudio.jobs.train_project``)
and the queue's reaper all go through :class:`TrainingRuns`.

"One run, plus at most one more" must hold however many API processes receive *Start Training*
at the same moment, so every transition is atomic in Redis (one hash per project, ``TRAIN``):

- ``request`` (API): idle -> queued, with the rq job enqueued in the same MULTI (WATCH on the
  hash); queued -> unchanged ("coalesced"); running -> again=1 ("scheduled after the running
  run"), or unchanged when one more run is already scheduled.
- ``work`` (worker): each run begins (Lua) -> running, again=0, owner=<run id>, and its record
  joins the history; it finishes (Lua, owner only): again=1 -> the job runs once more, else idle.
- ``job_lost`` (the queue's reaper, when the running worker stopped answering): -> queued
  (requeued) or idle (failed), with a note saying so in the state and in the interrupted run's record.

A run's record is written only while the run owns the project, so a worker that was declared
dead and comes back stops at its next progress write instead of training beside its successor.

The module ranks below the queue (``tests/test_layout.py``), so that the queue's reaper can hand it a
dead worker's job inside its own transaction: it knows no queue names, heartbeats or job bodies, and
its callers pass the rq queue, the liveness test and the job function. For the same reason Label
Studio's project ids are parsed here, once (``training_project``; ``labelstudio.protocol.project_id``
is its lenient form). It is over 300 lines because the transitions, in Python and in Lua, keep one
hash's invariants and are read together: split, the state machine would be spread over files again.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, cast

import redis

from .errors import DextrError, InputError, ServiceUnavailable, error_payload

if TYPE_CHECKING:
    from rq import Queue
    from rq.job import Job

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- Redis keys (their layout is kept across versions)
# hash: one project's state machine: state idle|queued|running, job, again 0|1, owner (the run id allowed
# to write), worker, jobs/runs counters, queued_at, since, note.
TRAIN = "dextr:train:{project}"
# set: projects that have a TRAIN hash, so status needs no SCAN.
TRAIN_PROJECTS = "dextr:train:projects"
# list: run ids of a project, newest first, trimmed to HISTORY.
TRAIN_RUNS = "dextr:train:{project}:runs"
# string: one run's JSON record (stages, progress, result, note).
TRAIN_RUN = "dextr:train:{project}:run:{run}"
TRAIN_TTL = 30 * 24 * 3600  # TRAIN, TRAIN_RUNS and TRAIN_RUN; refreshed on every write
HISTORY = 10  # runs kept per project
# counter: new or updated annotations of a project (DEXTR_TRAIN_EVERY), shared by every API process. No TTL.
ANNOTATIONS = "dextr:annotations:{project}"

JOB_TIMEOUT = 6 * 3600
RESULT_TTL = 7 * 24 * 3600
MAX_PROJECT_ID = 2**31 - 1  # Label Studio's ids are database integers
_NUMBER = re.compile(r"-?[0-9]+")


class RunTakenOver(DextrError):
    """This run no longer owns its project: it was requeued after its worker stopped answering."""


def training_project(value) -> int:
    """A project as Label Studio sends it (``3``, ``"3.1700000000"``: its ``<id>.<created>``, or
    ``{"id": 3}``) as an id in 1 .. 2**31 - 1; :class:`InputError` saying why not otherwise."""
    if isinstance(value, dict):
        value = value.get("id")
    if value is None:
        raise InputError("the webhook names no project")
    text = str(value).split(".", 1)[0].strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if not _NUMBER.fullmatch(text):
        raise InputError(f"project id {str(value)[:40]!r} is not a number")
    if len(text.lstrip("-0")) > 10 or not 1 <= int(text) <= MAX_PROJECT_ID:
        raise InputError(f"project id out of range: {text[:40]} (Label Studio ids run from 1 to {MAX_PROJECT_ID})")
    return int(text)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _state_key(project: int) -> str:
    return TRAIN.format(project=int(project))


def _runs_key(project: int) -> str:
    return TRAIN_RUNS.format(project=int(project))


def _run_key(project: int, run: str) -> str:
    return TRAIN_RUN.format(project=int(project), run=run)


def _text(mapping: dict) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in mapping.items()
    }


def _job_status(conn, job_id: str | None) -> str | None:
    raw = conn.hget(f"rq:job:{job_id}", "status") if job_id else None
    return raw.decode() if raw else None


@contextmanager
def _answering() -> Iterator[None]:
    """Redis down is an answer (503) for the API and the CLI, never a traceback."""
    try:
        yield
    except redis.RedisError as exc:
        raise ServiceUnavailable(
            f"Redis is unreachable ({type(exc).__name__}): the training runs are kept there; try again once it is back"
        ) from None


class TrainingRuns:
    """Every project's training runs in one Redis."""

    def __init__(self, conn: redis.Redis):
        self.conn = conn

    # ------------------------------------------------------------ API and CLI
    def request(self, queue: Queue, job_function: Callable[[int], dict], project) -> dict:
        """*Start Training* (and ``DEXTR_TRAIN_EVERY``): enqueue ``job_function(project)`` on ``queue``
        (the training queue), coalesce into the waiting run, or schedule one more after the running one.
        ``project`` as Label Studio sends it; the job's arguments name it and nothing else."""
        project = training_project(project)
        with _answering(), self.conn.pipeline() as pipe:
            while True:
                try:
                    return self._request(pipe, queue, job_function, project)
                except redis.WatchError:
                    continue

    def _request(self, pipe, queue: Queue, job_function: Callable[[int], dict], project: int) -> dict:
        key = _state_key(project)
        pipe.watch(key)
        state = _text(pipe.hgetall(key))
        job = state.get("job")
        current = state.get("state", "idle")
        if current in ("queued", "running"):
            pipe.watch(f"rq:job:{job}")
            if _job_status(pipe, job) not in ("queued", "started"):
                current = "idle"  # its job ended or vanished without saying so
        pipe.multi()
        if current == "queued":
            answer = {"status": "coalesced", "job": job}
        elif current == "running" and state.get("again") == "1":
            answer = {
                "status": "coalesced",
                "job": job,
                "detail": "one more run is already scheduled after the running one",
            }
        elif current == "running":
            pipe.hset(key, "again", 1)
            answer = {"status": "scheduled after the running job", "job": job}
        else:
            number = int(state.get("jobs", 0)) + 1
            job = f"train-project-{project}-{number}"
            stamp = _now()
            pipe.hset(
                key,
                mapping={
                    "state": "queued",
                    "job": job,
                    "again": 0,
                    "jobs": number,
                    "owner": "",
                    "queued_at": stamp,
                    "since": stamp,
                    "note": "",
                },
            )
            queue.enqueue_call(
                job_function,
                args=(project,),
                job_id=job,
                description=f"train_project({project})",
                meta={"project": project},
                timeout=JOB_TIMEOUT,
                result_ttl=RESULT_TTL,
                failure_ttl=RESULT_TTL,
                pipeline=pipe,
            )
            answer = {"status": "queued", "job": job}
        pipe.expire(key, TRAIN_TTL)
        pipe.sadd(TRAIN_PROJECTS, project)
        pipe.execute()
        return answer

    def count_annotation(self, project) -> int:
        """A new or updated annotation of ``project``: the count so far, shared by every API process
        (``DEXTR_TRAIN_EVERY`` starts a run at each multiple)."""
        project = training_project(project)
        with _answering():
            return int(self.conn.incr(ANNOTATIONS.format(project=project)))

    def status(self, alive: Callable[[redis.Redis, str], bool]) -> list[dict]:
        """Every project's training: state, the newest run's progress, the last outcome, and the last
        ``HISTORY`` runs (newest first) so a promotion is not hidden by the follow-up run. ``alive(conn,
        worker)`` tells whether a running run's worker still answers (``queue.liveness.heartbeat``)."""
        out = []
        with _answering():
            for project in sorted(int(p) for p in self.conn.smembers(TRAIN_PROJECTS)):
                state = _text(self.conn.hgetall(_state_key(project)))
                if not state:
                    continue
                ids = [cast(bytes, i).decode() for i in self.conn.lrange(_runs_key(project), 0, HISTORY - 1)]
                raws = self.conn.mget([_run_key(project, i) for i in ids]) if ids else []
                worker = state.get("worker", "")
                gone = state.get("state") == "running" and bool(worker) and not alive(self.conn, worker)
                out.append(_project_entry(project, state, [json.loads(r) for r in raws if r], gone))
        return out

    # ------------------------------------------------------------ worker
    def work(self, project: int, job_id: str, worker: str, train: Callable[[Run], dict]) -> dict:
        """The worker's side of job ``job_id``: ``train(run)`` (answering ``{"ok": ...}`` or ``{"error":
        ...}``) as one run of ``project``, and once more while a request came in during the run, so labels
        accepted meanwhile are not left out and two runs never overlap. The last run's answer; an error
        payload when the run was handed to another worker (``RunTakenOver``)."""
        while True:
            run = Run.begin(self.conn, project, job_id, worker)
            try:
                result = train(run)
                again = run.finish(result=result.get("ok"), error=result.get("error"))
            except RunTakenOver as exc:
                log.warning("training run taken over", extra={"project": project, "detail": str(exc)})
                return error_payload(exc)
            if not again:
                return result

    # ------------------------------------------------------------ reaper
    def job_lost(self, pipe, job: Job, requeue: bool, note: str) -> None:
        """In the reaper's transaction (``pipe`` WATCHing nothing yet; this WATCHes, reads, then starts
        its MULTI): the project's state and its interrupted run's record say what happened to training
        job ``job``, whose worker stopped answering. The job itself is requeued or failed by the reaper."""
        project = int(job.meta.get("project") or job.id.rsplit("-", 2)[-2])
        key = _state_key(project)
        pipe.watch(key)
        state = _text(pipe.hgetall(key))
        owner = state.get("owner", "")
        raw = pipe.get(_run_key(project, owner)) if owner else None
        pipe.multi()
        stamp = _now()
        if state.get("job") == job.id:
            if requeue:
                pipe.hset(key, mapping={"state": "queued", "owner": "", "note": note, "since": stamp})
            else:
                pipe.hset(key, mapping={"state": "idle", "owner": "", "again": 0, "note": note, "since": stamp})
        if raw:
            record = json.loads(raw)
            record.update(status="interrupted", ended=stamp, note=note, stage="interrupted")
            record["stages"].append({"stage": "interrupted", "at": stamp})
            pipe.set(_run_key(project, owner), json.dumps(record), ex=TRAIN_TTL)


# KEYS: state hash, run key. ARGV: run id, record JSON, ttl.
_WRITE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: state hash, runs list, run key. ARGV: run id, job, worker, record JSON, ttl, now, history,
# prefix of run keys (for the runs trimmed off the history).
_BEGIN = """
redis.call('HSET', KEYS[1], 'state', 'running', 'job', ARGV[2], 'worker', ARGV[3], 'owner', ARGV[1],
           'again', '0', 'since', ARGV[6], 'note', '')
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
redis.call('LPUSH', KEYS[2], ARGV[1])
for _, old in ipairs(redis.call('LRANGE', KEYS[2], tonumber(ARGV[7]), -1)) do
  redis.call('DEL', ARGV[8] .. old)
end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[7]) - 1)
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: state hash, run key. ARGV: run id, record JSON, ttl, now.
# Returns -1 (not the owner), 1 (run once more) or 0 (idle).
_FINISH = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if redis.call('HGET', KEYS[1], 'again') == '1' then
  redis.call('HSET', KEYS[1], 'again', '0', 'owner', '', 'since', ARGV[4])
  return 1
end
redis.call('HSET', KEYS[1], 'state', 'idle', 'owner', '', 'since', ARGV[4])
return 0
"""


class Run:
    """One training run of a project inside a job (see ``TrainingRuns.work``): its record in the
    history and its progress.

    Records look like ``{run, job, project, worker, status: running|finished|failed|interrupted,
    started, ended, note, stage, stages: [{stage, at}], progress: {...}, result, error}``."""

    PROGRESS_SECONDS = 2.0  # progress writes at most this often (stages and results always)

    def __init__(self, conn: redis.Redis, project: int, run_id: str, record: dict):
        self.conn, self.project, self.id, self.record = conn, project, run_id, record
        self._written = 0.0

    @classmethod
    def begin(cls, conn: redis.Redis, project: int, job_id: str, worker: str) -> Run:
        number = conn.hincrby(_state_key(project), "runs", 1)
        run_id = f"{project}.{number}"
        note = cast(bytes, conn.hget(_state_key(project), "note") or b"").decode()
        record: dict = {
            "run": run_id,
            "job": job_id,
            "project": project,
            "worker": worker,
            "status": "running",
            "started": _now(),
            "ended": None,
            "note": note or None,
            "stage": "starting",
            "stages": [{"stage": "starting", "at": _now()}],
            "progress": {},
            "result": None,
            "error": None,
        }
        conn.eval(
            _BEGIN,
            3,
            _state_key(project),
            _runs_key(project),
            _run_key(project, run_id),
            run_id,
            job_id,
            worker,
            json.dumps(record),
            TRAIN_TTL,
            _now(),
            HISTORY,
            _run_key(project, ""),
        )
        return cls(conn, project, run_id, record)

    def _write(self) -> None:
        ok = self.conn.eval(
            _WRITE,
            2,
            _state_key(self.project),
            _run_key(self.project, self.id),
            self.id,
            json.dumps(self.record),
            TRAIN_TTL,
        )
        self._written = time.monotonic()
        if not ok:
            raise RunTakenOver(
                f"run {self.id} of project {self.project} was handed to another worker "
                "after this one stopped answering; stopping it here"
            )

    def stage(self, name: str) -> None:
        self.record["stage"] = name
        self.record["stages"].append({"stage": name, "at": _now()})
        self._write()

    def progress(self, force: bool = False, **fields) -> None:
        self.record["progress"].update(fields)
        if force or time.monotonic() - self._written >= self.PROGRESS_SECONDS:
            self._write()

    def last_trained(self) -> dict | None:
        """The newest earlier run of this project that trained and finished: ``{run, version,
        data_hash, started_from}``. Two presses moments apart must not train twice on the same data."""
        for run_id in self.conn.lrange(_runs_key(self.project), 0, HISTORY - 1):
            raw = self.conn.get(_run_key(self.project, cast(bytes, run_id).decode()))
            record = json.loads(raw) if raw else {}
            result = record.get("result") or {}
            if record.get("run") != self.id and record.get("status") == "finished" and "version" in result:
                return {
                    "run": record["run"],
                    "version": result["version"],
                    "data_hash": result.get("data_hash"),
                    "started_from": result.get("started_from"),
                }
        return None

    def finish(self, result: dict | None = None, error: str | None = None) -> bool:
        """Record the outcome; True when another request came during the run (run once more)."""
        self.record.update(
            status="failed" if error else "finished",
            ended=_now(),
            result=result,
            error=error,
            stage="failed" if error else "done",
        )
        self.record["stages"].append({"stage": self.record["stage"], "at": self.record["ended"]})
        answer = self.conn.eval(
            _FINISH,
            2,
            _state_key(self.project),
            _run_key(self.project, self.id),
            self.id,
            json.dumps(self.record),
            TRAIN_TTL,
            _now(),
        )
        return answer == 1


def _project_entry(project: int, state: dict, records: list[dict], worker_gone: bool) -> dict:
    """One project's line of the status, from its state hash and its runs' records (newest first)."""
    current = state.get("state", "idle")
    latest = records[0] if records else None
    ended = next((r for r in records if r.get("status") != "running"), None)
    if current == "running" and latest and latest.get("status") == "running":
        status, progress = "started", {**latest.get("progress", {}), "stage": latest.get("stage")}
    elif current in ("queued", "running"):  # waiting for a worker, or between two runs of a job
        status, progress = ("queued" if current == "queued" else "started"), {"stage": "queued"}
    else:
        status = ("finished" if ended.get("status") == "finished" else "failed") if ended else "unknown"
        progress = {**(ended or {}).get("progress", {}), "stage": (ended or {}).get("stage", "-")}
    note = state.get("note") or None
    if worker_gone:
        note = f"worker {state.get('worker')} is not answering; its job is requeued within a minute"
    result = ended.get("result") if ended else None
    error = ended.get("error") if ended else None
    return {
        "project": project,
        "job": state.get("job"),
        "status": status,
        "state": current,
        "again": state.get("again") == "1",
        "note": note,
        "progress": progress,
        "enqueued_at": state.get("queued_at"),
        "ended_at": ended.get("ended") if ended else None,
        "result": {"ok": result} if result is not None else None,
        "error": error,
        "runs": records,
    }
