"""Real services for tests: a redis-server we can stop and restart, and dextr-backend workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis


def poll(condition, seconds: float, step: float = 0.1):
    """The first truthy value of ``condition()`` within ``seconds``, else its last (falsy) value."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, workdir: Path | None, port: int | None = None):
        self.workdir = Path(workdir) if workdir else None
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    @classmethod
    def external(cls, url: str) -> RedisServer:
        server = cls(None, port=0)
        server.url = url
        return server

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class _Process:
    """Stop politely, then kill: the lifecycle our server subprocesses share."""

    proc: subprocess.Popen | None = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def serve_folder(folder: Path) -> str:
    """A threaded static HTTP server on 127.0.0.1 for ``folder``; returns ``host:port``."""
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(folder), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}"


class Worker(_Process):
    """``dextr-backend worker`` as a real subprocess."""

    def __init__(self, redis_url: str, env: dict, queues: str = "dextr-predict", log: Path | None = None):
        self.redis_url, self.env, self.queues, self.log = redis_url, env, queues, log
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "dextr_backend", "worker", "--queues", self.queues, "--redis-url", self.redis_url]

    def is_up(self, conn: redis.Redis) -> bool:
        """Redis lists this very process as alive (its key holds the pid)."""
        return any(f"-{self.proc.pid}-" in key.decode() for key in conn.scan_iter("dextr:alive:*"))

    def start(self, wait: float = 60.0) -> Worker:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.argv(), env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT)
        conn = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; log: {self.log}")
            if self.is_up(conn):
                return self
            time.sleep(0.1)
        raise RuntimeError("worker did not come up")


class Backend(_Process):
    """``dextr-backend serve`` as a real subprocess on a free port."""

    def __init__(self, env: dict, log: Path | None = None):
        self.env, self.log = env, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: float = 60.0) -> Backend:
        import urllib.request

        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dextr_backend", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env={**os.environ, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {self.proc.returncode}; log: {self.log}")
            try:
                with urllib.request.urlopen(self.url + "/versions", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("backend did not come up")


def served_in_mode(mode: str, env: dict, tmp_path: Path, redis_url: str | None = None):
    """``serve`` as a user runs it: ``in-process``, or ``queue`` (``REDIS_URL`` set and one worker
    behind it). Yields ``(mode, backend, worker or None)`` and stops both; logs go under ``tmp_path``."""
    worker = None
    if mode == "queue":
        env = {**env, "REDIS_URL": redis_url}
        worker = Worker(redis_url, env, log=tmp_path / "worker.log").start()
    server = Backend(env, log=tmp_path / "backend.log").start()
    try:
        yield mode, server, worker
    finally:
        server.stop()
        if worker:
            worker.stop()


def press_start_training(client, project) -> dict:
    """*Start Training* for ``project`` as the server presses it (``server.training``): dead training
    workers' jobs handed on, then a run requested from the project's training runs."""
    from dextr_backend.labelstudio import jobs
    from dextr_backend.training_runs import TrainingRuns

    client.reap_dead_workers()
    return TrainingRuns(client.redis).request(client.train_queue, jobs.train_project, project)


def training_status(client) -> list[dict]:
    """``GET /train/status``'s jobs, read from Redis as the server reads them."""
    from dextr_backend.queue.liveness import heartbeat
    from dextr_backend.training_runs import TrainingRuns

    return TrainingRuns(client.redis).status(heartbeat)


def env_settings(**fields):
    """The environment's settings (a test's ``DEXTR_WEIGHTS_DIR`` included) with ``fields`` changed:
    ``Settings(...)`` alone would serve the default store, since only settings read the environment."""
    import dataclasses

    from dextr_backend.settings import Settings

    return dataclasses.replace(Settings.from_env(), **fields)


def segment_job(body: dict, seconds: float = 120.0) -> dict:
    """The queue job a Label Studio /predict body becomes (``labelstudio.jobs.segment``'s argument)."""
    from dextr_backend.labelstudio.requests import parse_request, work
    from dextr_backend.service.segmentation import job_payload

    return job_payload([w.item for w in work(parse_request(body))], time.monotonic() + seconds)
