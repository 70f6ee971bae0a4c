"""One project's retraining as a small state machine in one Redis hash (``keys.TRAIN``).

"One run, plus at most one more" must hold however many API processes receive *Start Training*
at the same moment, so every transition is atomic in Redis:

- ``request`` (API): idle -> queued, with the rq job enqueued in the same MULTI (WATCH on the
  hash); queued -> unchanged ("coalesced"); running -> again=1 ("scheduled after the running
  run"), or unchanged when one more run is already scheduled.
- ``Run.begin`` (worker): -> running, again=0, owner=<run id>; a run record joins the history.
- ``Run.finish`` (worker, Lua): owner only; again=1 -> the job runs once more; else -> idle.
- ``worker_lost`` (reaper, when the running worker stopped answering): -> queued (requeued) or
  idle (failed), with a note saying so in the state and in the interrupted run's record.

A run's record is written only while the run owns the project, so a worker that was declared
dead and comes back stops at its next progress write instead of training beside its successor.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone

import redis
from rq import Queue

from ..errors import DextrError, InputError
from .keys import (HISTORY, TRAIN_PROJECTS, TRAIN_TTL, alive_key, run_key, runs_key, train_key)

MAX_PROJECT_ID = 2**31 - 1
JOB_TIMEOUT = 6 * 3600
RESULT_TTL = 7 * 24 * 3600


class RunTakenOver(DextrError):
    """This run no longer owns its project: it was requeued after its worker stopped answering."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def training_project(value) -> int:
    """A webhook's project (``3``, ``"3.1700000000"``, ``{"id": 3}``) as an id in 1 .. 2**31 - 1."""
    if isinstance(value, dict):
        value = value.get("id")
    if value is None:
        raise InputError("the webhook names no project")
    try:
        pid = int(str(value).split(".", 1)[0].strip()) if not isinstance(value, bool) else None
    except ValueError:
        pid = None
    if pid is None:
        raise InputError(f"project id {str(value)[:40]!r} is not a number")
    if not 1 <= pid <= MAX_PROJECT_ID:
        raise InputError(f"project id out of range: {str(pid)[:40]} (Label Studio ids run from 1 to {MAX_PROJECT_ID})")
    return pid


def _text(mapping: dict) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in mapping.items()}


def _job_status(conn, job_id: str | None) -> str | None:
    raw = conn.hget(f"rq:job:{job_id}", "status") if job_id else None
    return raw.decode() if raw else None


def request(conn: redis.Redis, queue: Queue, project: int, job_function: Callable[[int], dict]) -> dict:
    """*Start Training*: enqueue ``job_function(project)``, coalesce into the waiting run, or
    schedule one more. The queue knows no job bodies: the caller names the function."""
    key = train_key(project)
    with conn.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                state = _text(pipe.hgetall(key))
                job = state.get("job")
                current = state.get("state", "idle")
                if current in ("queued", "running"):
                    pipe.watch(f"rq:job:{job}")
                    if _job_status(pipe, job) not in ("queued", "started"):
                        current = "idle"      # its job ended or vanished without saying so
                pipe.multi()
                if current == "queued":
                    answer = {"status": "coalesced", "job": job}
                elif current == "running" and state.get("again") == "1":
                    answer = {"status": "coalesced", "job": job,
                              "detail": "one more run is already scheduled after the running one"}
                elif current == "running":
                    pipe.hset(key, "again", 1)
                    answer = {"status": "scheduled after the running job", "job": job}
                else:
                    number = int(state.get("jobs", 0)) + 1
                    job = f"train-project-{project}-{number}"
                    stamp = now_iso()
                    pipe.hset(key, mapping={"state": "queued", "job": job, "again": 0, "jobs": number,
                                            "owner": "", "queued_at": stamp, "since": stamp, "note": ""})
                    queue.enqueue_call(job_function, args=(project,), job_id=job,
                                       description=f"train_project({project})", meta={"project": project},
                                       timeout=JOB_TIMEOUT, result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL,
                                       pipeline=pipe)
                    answer = {"status": "queued", "job": job}
                pipe.expire(key, TRAIN_TTL)
                pipe.sadd(TRAIN_PROJECTS, project)
                pipe.execute()
                return answer
            except redis.WatchError:
                continue


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
    """One training run of a project inside a job: its record in the history and its progress.

    Records look like ``{run, job, project, worker, status: running|finished|failed|interrupted,
    started, ended, note, stage, stages: [{stage, at}], progress: {...}, result, error}``."""

    PROGRESS_SECONDS = 2.0      # progress writes at most this often (stages and results always)

    def __init__(self, conn: redis.Redis, project: int, run_id: str, record: dict):
        self.conn, self.project, self.id, self.record = conn, project, run_id, record
        self._written = 0.0

    @classmethod
    def begin(cls, conn: redis.Redis, project: int, job_id: str, worker: str) -> "Run":
        number = conn.hincrby(train_key(project), "runs", 1)
        run_id = f"{project}.{number}"
        note = (conn.hget(train_key(project), "note") or b"").decode()
        record = {"run": run_id, "job": job_id, "project": project, "worker": worker, "status": "running",
                  "started": now_iso(), "ended": None, "note": note or None, "stage": "starting",
                  "stages": [{"stage": "starting", "at": now_iso()}], "progress": {}, "result": None,
                  "error": None}
        conn.eval(_BEGIN, 3, train_key(project), runs_key(project), run_key(project, run_id), run_id, job_id,
                  worker, json.dumps(record), TRAIN_TTL, now_iso(), HISTORY, run_key(project, ""))
        return cls(conn, project, run_id, record)

    def _write(self) -> None:
        ok = self.conn.eval(_WRITE, 2, train_key(self.project), run_key(self.project, self.id), self.id,
                            json.dumps(self.record), TRAIN_TTL)
        self._written = time.monotonic()
        if not ok:
            raise RunTakenOver(f"run {self.id} of project {self.project} was handed to another worker "
                               "after this one stopped answering; stopping it here")

    def stage(self, name: str) -> None:
        self.record["stage"] = name
        self.record["stages"].append({"stage": name, "at": now_iso()})
        self._write()

    def progress(self, force: bool = False, **fields) -> None:
        self.record["progress"].update(fields)
        if force or time.monotonic() - self._written >= self.PROGRESS_SECONDS:
            self._write()

    def last_trained(self) -> dict | None:
        """The newest earlier run of this project that trained and finished: ``{run, version,
        data_hash, started_from}``. Two presses moments apart must not train twice on the same data."""
        for run_id in self.conn.lrange(runs_key(self.project), 0, HISTORY - 1):
            raw = self.conn.get(run_key(self.project, run_id.decode()))
            record = json.loads(raw) if raw else {}
            result = record.get("result") or {}
            if record.get("run") != self.id and record.get("status") == "finished" and "version" in result:
                return {"run": record["run"], "version": result["version"], "data_hash": result.get("data_hash"),
                        "started_from": result.get("started_from")}
        return None

    def finish(self, result: dict | None = None, error: str | None = None) -> bool:
        """Record the outcome; True when another request came during the run (run once more)."""
        self.record.update(status="failed" if error else "finished", ended=now_iso(), result=result,
                           error=error, stage="failed" if error else "done")
        self.record["stages"].append({"stage": self.record["stage"], "at": self.record["ended"]})
        answer = self.conn.eval(_FINISH, 2, train_key(self.project), run_key(self.project, self.id), self.id,
                                json.dumps(self.record), TRAIN_TTL, now_iso())
        return answer == 1


def worker_lost(conn: redis.Redis, pipe, job, dead_worker: str, requeue: bool, note: str) -> None:
    """In the reaper's transaction (``pipe`` WATCHing nothing yet): the project's state and its
    interrupted run's record say what happened; the job itself is requeued or failed by the caller."""
    project = int(job.meta.get("project") or job.id.rsplit("-", 2)[-2])
    key = train_key(project)
    pipe.watch(key)
    state = _text(pipe.hgetall(key))
    owner = state.get("owner")
    raw = pipe.get(run_key(project, owner)) if owner else None
    pipe.multi()
    stamp = now_iso()
    if state.get("job") == job.id:
        if requeue:
            pipe.hset(key, mapping={"state": "queued", "owner": "", "note": note, "since": stamp})
        else:
            pipe.hset(key, mapping={"state": "idle", "owner": "", "again": 0, "note": note, "since": stamp})
    if raw:
        record = json.loads(raw)
        record.update(status="interrupted", ended=stamp, note=note, stage="interrupted")
        record["stages"].append({"stage": "interrupted", "at": stamp})
        pipe.set(run_key(project, owner), json.dumps(record), ex=TRAIN_TTL)


def _project_entry(conn, project: int, state: dict, records: list[dict]) -> dict:
    current = state.get("state", "idle")
    latest = records[0] if records else None
    ended = next((r for r in records if r.get("status") != "running"), None)
    if current == "running" and latest and latest.get("status") == "running":
        status, progress = "started", {**latest.get("progress", {}), "stage": latest.get("stage")}
    elif current in ("queued", "running"):        # waiting for a worker, or between two runs of a job
        status, progress = ("queued" if current == "queued" else "started"), {"stage": "queued"}
    else:
        status = ("finished" if ended.get("status") == "finished" else "failed") if ended else "unknown"
        progress = {**(ended or {}).get("progress", {}), "stage": (ended or {}).get("stage", "-")}
    note = state.get("note") or None
    worker = state.get("worker")
    if current == "running" and worker and not conn.exists(alive_key(worker)):
        note = f"worker {worker} is not answering; its job is requeued within a minute"
    result = ended.get("result") if ended else None
    error = ended.get("error") if ended else None
    return {"project": project, "job": state.get("job"), "status": status, "state": current,
            "again": state.get("again") == "1", "note": note, "progress": progress,
            "enqueued_at": state.get("queued_at"), "ended_at": ended.get("ended") if ended else None,
            "result": {"ok": result} if result is not None else None, "error": error, "runs": records}


def status(conn: redis.Redis) -> list[dict]:
    """Every project's training: state, the newest run's progress, the last outcome, and the last
    ``HISTORY`` runs (newest first) so a promotion is not hidden by the follow-up run."""
    out = []
    for project in sorted(int(p) for p in conn.smembers(TRAIN_PROJECTS)):
        state = _text(conn.hgetall(train_key(project)))
        if not state:
            continue
        ids = [i.decode() for i in conn.lrange(runs_key(project), 0, HISTORY - 1)]
        raws = conn.mget([run_key(project, i) for i in ids]) if ids else []
        records = [json.loads(r) for r in raws if r]
        out.append(_project_entry(conn, project, state, records))
    return out
