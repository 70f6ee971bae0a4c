"""Queue workers outlive the faults an operator meets (issue 26): Redis going away while a worker
finishes a job, a worker restarted under its fixed ``--name`` after ``kill -9``, and a worker
paused long enough for its heartbeat to lapse. Real Redis, real worker processes, real signals."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.results import Result
from services import Worker, poll, segment_job
from test_server import _slow_batch, body

from dextr_backend.labelstudio import jobs
from dextr_backend.queue import PREDICT_QUEUE
from dextr_backend.queue.client import QueueClient


@pytest.fixture()
def env(worker_env):
    # LOG_LEVEL INFO: the tests read the worker's log lines; the timeout is a job's own deadline
    # when the caller sets none, with room for pauses.
    return {**worker_env, "LOG_LEVEL": "INFO", "DEXTR_PREDICT_TIMEOUT": "90"}


class NamedWorker(Worker):
    """``dextr-backend worker --name NAME``: up once Redis lists this very process under that name."""

    def __init__(self, redis_url: str, env: dict, name: str, log=None):
        super().__init__(redis_url, env, log=log)
        self.name = name

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "dextr_backend", "worker", "--redis-url", self.redis_url, "--name", self.name]

    def is_up(self, conn: redis.Redis) -> bool:
        return (
            bool(conn.exists(f"dextr:alive:{self.name}"))
            and conn.hget(f"rq:worker:{self.name}", "pid") == str(self.proc.pid).encode()
        )


def started_job(url: str, seconds: float = 60) -> Job:
    """The first prediction job a worker has started."""
    conn = redis.Redis.from_url(url)
    registry = StartedJobRegistry(PREDICT_QUEUE, connection=conn)
    ids = poll(registry.get_job_ids, seconds, step=0.02)
    assert ids, "no job started"
    return Job.fetch(ids[0], connection=conn)


def in_thread(fn, *args):
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def successes(url: str, worker: str) -> int:
    return int(redis.Redis.from_url(url).hget(f"rq:worker:{worker}", "successful_job_count") or 0)


@pytest.mark.slow
def test_redis_stopped_while_a_worker_finishes_a_job(private_redis, env, image_server, tmp_path, caplog):
    """Redis goes away (and its data is saved, as a restart with persistence does) just after a
    worker started a job; the job ends during the outage; Redis is back 5 s later. The worker
    process stays, records the answer once Redis is back, says "redis lost" and "redis back" once
    each, and serves the next request; the waiting API call gets the answer, from one run."""
    caplog.set_level(logging.INFO)
    log = tmp_path / "worker.log"
    worker = Worker(private_redis.url, env, log=log).start()
    conn = redis.Redis.from_url(private_redis.url)
    client = QueueClient(private_redis.url)
    try:
        assert "ok" in client.call(jobs.segment, segment_job(body(image_server)), timeout=30)  # warm
        thread, out = in_thread(client.call, jobs.segment, segment_job(_slow_batch(image_server, 2)), 90)
        job = started_job(private_redis.url)
        conn.config_set("save", "3600 1")  # the restart keeps Redis's data, as AOF or RDB would
        private_redis.stop()
        time.sleep(5)
        private_redis.start()
        thread.join(90)
        assert "error" not in out and len(out["value"]["ok"]["masks"]) == 4 * 2, out
        assert worker.proc.poll() is None, log.read_text()[-3000:]
        assert len(Result.all(Job.fetch(job.id, connection=conn))) == 1
        assert successes(private_redis.url, job.worker_name) == 2  # the warm-up, and this once
        assert "ok" in client.call(jobs.segment, segment_job(body(image_server)), timeout=30)  # the same process serves
        assert successes(private_redis.url, job.worker_name) == 3
    finally:
        worker.stop()
    text = log.read_text()
    assert text.count('"redis lost"') == 1 and text.count('"redis back"') == 1, text[-3000:]
    assert "unhandled exception" not in text
    assert not [r for r in caplog.records if "retrying once" in r.getMessage()]


@pytest.mark.slow
def test_an_idle_worker_outlives_a_redis_restart_that_lost_everything(private_redis, env, image_server, tmp_path):
    """No persistence: Redis comes back empty. The worker listens again and registers again."""
    from rq import Worker as RqWorker

    log = tmp_path / "worker.log"
    worker = Worker(private_redis.url, env, log=log).start()
    client = QueueClient(private_redis.url)
    try:
        private_redis.stop()
        time.sleep(5)
        private_redis.start()
        assert poll(lambda: len(client.workers()) == 1, 30), log.read_text()[-2000:]
        assert "ok" in client.call(jobs.segment, segment_job(body(image_server)), timeout=30)
        conn = redis.Redis.from_url(private_redis.url)
        assert poll(lambda: [w.pid for w in RqWorker.all(connection=conn)] == [worker.proc.pid], 10)
    finally:
        worker.stop()
    assert log.read_text().count('"redis back"') == 1


@pytest.mark.slow
def test_a_killed_named_worker_restarts_under_its_name_and_answers_the_waiting_request(
    private_redis, env, image_server, tmp_path
):
    """systemd or compose restart a worker under its fixed name at once after ``kill -9``: the name
    is taken over (its pid is gone on this host), the dead registration's job is handed on, and the
    request that was waiting on it is answered by the restarted worker."""
    url = private_redis.url
    first = NamedWorker(url, env, "annotators-1", log=tmp_path / "first.log").start()
    client = QueueClient(url)
    thread, out = in_thread(client.call, jobs.segment, segment_job(_slow_batch(image_server, 8)), 120)
    try:
        job = started_job(url)
        assert job.worker_name == "annotators-1"
        first.kill()
        second = NamedWorker(url, env, "annotators-1", log=tmp_path / "second.log").start()
        thread.join(120)
        assert "error" not in out and len(out["value"]["ok"]["masks"]) == 4 * 8, out
        assert client.workers() == ["annotators-1"]
        assert "ok" in client.call(jobs.segment, segment_job(body(image_server)), timeout=30)
        assert second.proc.poll() is None
        assert "took over the name of a dead worker" in second.log.read_text()
    finally:
        for w in (first, locals().get("second")):
            if w:
                w.stop()


@pytest.mark.slow
def test_a_name_held_by_a_live_worker_is_one_clear_line_and_exit_2(private_redis, env, tmp_path):
    url = private_redis.url
    live = NamedWorker(url, env, "annotators-2", log=tmp_path / "live.log").start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dextr_backend", "worker", "--redis-url", url, "--name", "annotators-2"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if "error" in line]
        assert errors == [
            f"dextr-backend: error: worker name 'annotators-2' is in use by a live worker "
            f"(pid {live.proc.pid} on {os.uname().nodename}); pick another --name, or stop that "
            "worker first"
        ], done.stderr
        assert "Traceback" not in done.stderr
        assert live.proc.poll() is None and QueueClient(url).workers() == ["annotators-2"]
    finally:
        live.stop()


@pytest.mark.slow
def test_a_paused_workers_job_is_not_run_a_second_time(private_redis, env, image_server, tmp_path):
    """A worker stops answering for 15 s (SIGSTOP: as a long computation holding Python's lock
    did) while it runs a job: its heartbeat lapses, but its connections stay open. Neither the
    waiting API call nor the other worker's reaper hands the job on; it is answered once, by
    the paused worker, when it resumes."""
    url = private_redis.url
    workers = [Worker(url, env, log=tmp_path / f"worker{i}.log").start() for i in range(2)]
    client = QueueClient(url)
    try:
        thread, out = in_thread(client.call, jobs.segment, segment_job(_slow_batch(image_server, 6)), 90)
        job = started_job(url)
        (paused,) = [w for w in workers if f"-{w.proc.pid}-" in job.worker_name]
        (other,) = [w for w in workers if w is not paused]
        os.kill(paused.proc.pid, signal.SIGSTOP)
        try:
            assert poll(lambda: not any(f"-{paused.proc.pid}-" in n for n in client.workers()), 10)
            time.sleep(15)
            assert Job.fetch(job.id, connection=redis.Redis.from_url(url)).get_status() == JobStatus.STARTED
        finally:
            os.kill(paused.proc.pid, signal.SIGCONT)
        thread.join(90)
        assert "error" not in out and len(out["value"]["ok"]["masks"]) == 4 * 6, out
        other_name = [n for n in client.workers() if f"-{other.proc.pid}-" in n][0]
        assert successes(url, other_name) == 0, "the other worker ran the paused worker's job too"
        assert successes(url, job.worker_name) == 1
    finally:
        for w in workers:
            os.kill(w.proc.pid, signal.SIGCONT)
            w.stop()


@pytest.mark.slow
def test_a_stop_request_ends_a_worker_within_docker_stops_grace(private_redis, env, tmp_path):
    """SIGTERM (``docker stop``, systemd) ends an idle worker before the 10 s after which they kill it.
    rq's stop waited for redis-py's command-channel thread, which could sleep up to a minute once
    unsubscribed; it did in about one stop in three here, so the test stops five workers in turn."""
    for i in range(5):
        worker = Worker(private_redis.url, env, log=tmp_path / f"worker{i}.log").start()
        worker.proc.terminate()
        try:
            assert worker.proc.wait(10) == 0
        except subprocess.TimeoutExpired:
            pytest.fail(f"stop {i + 1}: the worker was still running 10 s after SIGTERM")
        finally:
            worker.kill()
