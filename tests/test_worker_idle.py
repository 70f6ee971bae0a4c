"""Queue workers keep listening when idle, and their heartbeat is the dequeue loop's own: a worker
that stops listening drops out of ``/health`` within seconds. Real Redis, real worker processes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import redis
from rq import Queue
from services import Worker, poll, segment_job
from test_server import body

from dextr_backend.labelstudio import jobs
from dextr_backend.queue import PREDICT_QUEUE
from dextr_backend.queue.client import QueueClient
from dextr_backend.queue.keys import ALIVE_TTL, alive_key
from dextr_backend.queue.worker import DextrWorker, connect

IDLE_SECONDS = 100  # past rq's connection backoff (1+2+4+...+32 s, then 60 s at a time)


@pytest.fixture()
def env(worker_env):
    return worker_env


@pytest.mark.slow
def test_an_idle_worker_still_answers(private_redis, env, image_server, tmp_path):
    """With a read timeout shorter than rq's blocking dequeue, every idle dequeue fails and rq
    backs off for up to a minute at a time: this request would time out."""
    log = tmp_path / "worker.log"
    worker = Worker(private_redis.url, env, log=log).start()
    try:
        client = QueueClient(private_redis.url)
        time.sleep(IDLE_SECONDS)
        assert len(client.workers()) == 1
        started = time.monotonic()
        payload = client.call(jobs.segment, segment_job(body(image_server)), timeout=10)
        assert "ok" in payload, payload
        assert time.monotonic() - started < 10
        assert "could not connect to Redis" not in log.read_text()
    finally:
        worker.stop()


@pytest.mark.slow
def test_a_stopped_worker_drops_out_of_health(private_redis, env, tmp_path):
    log = tmp_path / "worker.log"
    worker = Worker(private_redis.url, env, log=log).start()
    client = QueueClient(private_redis.url)
    try:
        assert len(client.workers()) == 1
        starting = [json.loads(line) for line in log.read_text().splitlines() if '"worker starting"' in line]
        assert starting and starting[0]["threads"] == 1  # DEXTR_THREADS
        os.kill(worker.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        assert poll(lambda: client.workers() == [], ALIVE_TTL + 2), "a stopped worker still counted as alive"
        assert time.monotonic() - stopped <= ALIVE_TTL + 2
        os.kill(worker.proc.pid, signal.SIGCONT)
        assert poll(lambda: len(client.workers()) == 1, 10), "the worker did not come back"
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
        worker.stop()


class InThreadWorker(DextrWorker):
    def _install_signal_handlers(self):
        pass  # only the main thread may; this one runs in a thread


@pytest.mark.slow
def test_the_heartbeat_stops_when_the_dequeue_loop_stops_listening(private_redis, monkeypatch):
    """The process and its threads stay alive; only the loop is stuck (here: every dequeue fails,
    as with the old short read timeout). A heartbeat from a side thread would have gone on."""
    real = Queue.dequeue_any.__func__
    mode = {"now": "listen"}

    def dequeue_any(cls, queues, timeout, connection, **kw):
        if mode["now"] == "deaf":
            raise redis.ConnectionError("simulated: the dequeue cannot read from Redis")
        if mode["now"] == "stop":
            from rq.exceptions import StopRequested

            raise StopRequested()
        return real(cls, queues, timeout, connection, **kw)

    monkeypatch.setattr(Queue, "dequeue_any", classmethod(dequeue_any))
    worker = InThreadWorker([PREDICT_QUEUE], connection=connect(private_redis.url), name="in-thread")
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    client = QueueClient(private_redis.url)
    try:
        assert poll(lambda: client.workers() == ["in-thread"], 10)
        mode["now"] = "deaf"
        assert poll(lambda: client.workers() == [], ALIVE_TTL + 3), "a deaf worker still counted as alive"
        assert thread.is_alive()
        mode["now"] = "listen"
        assert poll(lambda: client.workers() == ["in-thread"], 15), "the worker did not listen again"
    finally:
        mode["now"] = "stop"
        thread.join(20)
    assert not redis.Redis.from_url(private_redis.url).exists(alive_key("in-thread"))


def test_a_timeout_counts_the_jobs_really_waiting(private_redis):
    """Counted before this request's job is cancelled, and without the ids of expired jobs that
    linger in rq's list: here one other live job and this one (three stale ids left out)."""
    from dextr_backend.errors import ServiceTimeout

    conn = redis.Redis.from_url(private_redis.url)
    conn.set(alive_key("nobody-home"), PREDICT_QUEUE, ex=60)  # "alive", but never takes a job
    client = QueueClient(private_redis.url)
    client.predict_queue.enqueue_call("dextr_backend.labelstudio.jobs.segment", args=({},), ttl=60)
    for stale in ("gone-1", "gone-2", "gone-3"):
        conn.rpush(client.predict_queue.key, stale)
    with pytest.raises(ServiceTimeout) as err:
        client.call(jobs.segment, {"items": []}, timeout=2)
    assert "2 jobs waiting in 'dextr-predict', this one included" in str(err.value)


@pytest.mark.slow
def test_a_dead_workers_prediction_is_failed_by_another_worker(private_redis, env, image_server, tmp_path):
    """Found from the heartbeat within seconds, not when rq's started-registry entry expires; the
    dead worker leaves rq's registry too (it was listed as busy)."""
    from rq import Worker as RqWorker
    from rq.job import Job, JobStatus
    from test_server import _slow_batch

    url = private_redis.url
    workers = [Worker(url, env, log=tmp_path / f"worker{i}.log").start() for i in range(2)]
    conn = redis.Redis.from_url(url)
    try:
        job = QueueClient(url).predict_queue.enqueue_call(
            "dextr_backend.labelstudio.jobs.segment",
            args=(segment_job(_slow_batch(image_server, 90), 300),),
            timeout=300,
        )
        assert poll(lambda: Job.fetch(job.id, connection=conn).get_status() == JobStatus.STARTED, 30)
        name = Job.fetch(job.id, connection=conn).worker_name
        (busy,) = [w for w in workers if f"-{w.proc.pid}-" in name]
        busy.kill()
        killed = time.monotonic()
        assert poll(lambda: Job.fetch(job.id, connection=conn).get_status() == JobStatus.FAILED, 45, step=0.5)
        assert time.monotonic() - killed < 45
        failed = Job.fetch(job.id, connection=conn).latest_result()
        assert f"worker {name} stopped answering" in failed.exc_string
        assert name not in {w.name for w in RqWorker.all(connection=conn)}
    finally:
        for w in workers:
            w.stop()


@pytest.mark.slow
def test_a_worker_started_before_redis_waits_for_it(env, tmp_path):
    """A compose stack may start the worker first: it waits, saying so, and serves once Redis is up."""
    import subprocess
    import sys

    from services import RedisServer, free_port

    server = RedisServer(tmp_path / "late-redis", port=free_port())
    log = tmp_path / "worker.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dextr_backend", "worker", "--redis-url", server.url],
            env={**os.environ, **env, "DEXTR_REDIS_WAIT": "90"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        assert poll(lambda: "waiting for Redis" in log.read_text(), 60), log.read_text()
        server.start()
        assert poll(lambda: len(QueueClient(server.url).workers()) == 1, 60), log.read_text()
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        finally:
            proc.kill()
            server.stop()


class LoopWentOn(BaseException):
    """Raised by the second reap, which a worker that stopped never reaches (not an Exception, so
    the loop's own error handling cannot swallow it)."""


def test_a_stop_during_a_reap_stops_the_worker_after_it(private_redis, monkeypatch):
    """SIGTERM lands wherever the main thread is; in CI it landed inside the first reap, rq's
    StopRequested was taken for a failed reap, and the worker listened on until killed."""
    from dextr_backend.queue import worker as worker_module

    reaps = []
    real_reap = worker_module.reap

    def reap_then_get_sigterm(conn):
        reaps.append(real_reap(conn))
        if len(reaps) > 1:
            raise LoopWentOn("the worker listened on after SIGTERM")
        os.kill(os.getpid(), signal.SIGTERM)  # rq's handler runs here, in the middle of the reap
        time.sleep(0.1)  # the rest of the reap
        reaps.append("finished")

    monkeypatch.setattr(worker_module, "SCAN_SECONDS", 0.0)  # reap on every turn of the loop
    monkeypatch.setattr(worker_module, "reap", reap_then_get_sigterm)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    conn = connect(private_redis.url, "stop-in-reap")
    try:
        started = time.monotonic()
        DextrWorker([PREDICT_QUEUE], connection=conn, name="stop-in-reap").work()
        assert time.monotonic() - started < 30
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert reaps == [[], "finished"]  # the reap ran to its end, and no second one started
    after = redis.Redis.from_url(private_redis.url)
    assert not after.exists(alive_key("stop-in-reap"))  # stopped as a stop does: unregistered


@pytest.mark.slow
def test_a_worker_gives_up_on_redis_with_a_clear_error(env, tmp_path):
    import subprocess
    import sys

    from services import free_port

    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    done = subprocess.run(
        [sys.executable, "-m", "dextr_backend", "worker", "--redis-url", url],
        env={**os.environ, **env, "DEXTR_REDIS_WAIT": "2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "cannot reach Redis" in done.stderr and "after 2 s" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
