"""Retraining requests on a real Redis with the real job loop: one run plus at most one more per
project however many requests race, the status keeps a history, and bad project ids are refused."""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter

import pytest
import redis
from services import env_settings, press_start_training, training_status

from dextr_backend.cli import main
from dextr_backend.errors import InputError
from dextr_backend.labelstudio import jobs
from dextr_backend.queue import TRAIN_QUEUE
from dextr_backend.queue.client import QueueClient
from dextr_backend.queue.worker import DextrWorker, connect
from dextr_backend.training_runs import TRAIN, TrainingRuns


@pytest.fixture()
def client(private_redis):
    return QueueClient(private_redis.url)


def press(url: str, project: int, n: int) -> Counter:
    """``n`` Start Training requests at the same moment, each from its own client (as from
    several API processes)."""
    clients = [QueueClient(url) for _ in range(n)]
    barrier = threading.Barrier(n)
    answers: list[str] = []

    def one(c):
        barrier.wait()
        answers.append(press_start_training(c, project)["status"])

    threads = [threading.Thread(target=one, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return Counter(answers)


def run_worker_until_idle(url: str) -> None:
    """A real DextrWorker in this process (burst mode: it stops when the queue is empty), so the
    job's own re-run loop runs against real Redis; rq's signal handlers are put back afterwards."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        DextrWorker([TRAIN_QUEUE], connection=connect(url), name="test-trainer").work(burst=True)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def test_concurrent_presses_on_an_idle_project_queue_exactly_one_job(client, private_redis):
    answers = press(private_redis.url, 7, 16)
    assert answers == Counter({"queued": 1, "coalesced": 15})
    assert client.train_queue.count == 1
    assert press_start_training(client, 8)["status"] == "queued"  # another project has its own
    assert client.train_queue.count == 2


def test_a_request_during_a_run_schedules_exactly_one_more(client, private_redis, monkeypatch):
    runs, during = [], {}

    def fake_training(project, run, conn):  # the real loop around it, real states in Redis
        runs.append(run.id)
        run.stage("training")
        if len(runs) == 1:
            run.progress(True, epoch=3, epochs=3, val_miou=71.5)
            during.update(press(private_redis.url, project, 12))
            state = conn.hgetall(TRAIN.format(project=project))
            assert state[b"state"] == b"running" and state[b"again"] == b"1"
        else:  # the follow-up does not show the first run's epoch
            (now,) = training_status(QueueClient(private_redis.url))
            assert now["status"] == "started" and now["progress"] == {"stage": "training"}
            assert now["runs"][1]["progress"]["epoch"] == 3
        return {"ok": {"version": f"v{len(runs)}", "promoted": True, "reason": "test"}}

    monkeypatch.setattr(jobs, "_train_once", fake_training)
    first = press_start_training(client, 7)
    run_worker_until_idle(private_redis.url)
    assert during == Counter({"scheduled after the running job": 1, "coalesced": 11})
    assert runs == ["7.1", "7.2"]  # the same job ran exactly once more
    (status,) = training_status(client)
    assert status["state"] == "idle" and status["status"] == "finished" and not status["again"]
    assert [r["run"] for r in status["runs"]] == ["7.2", "7.1"]  # newest first, both kept
    assert {r["job"] for r in status["runs"]} == {first["job"]}
    assert [r["result"]["version"] for r in status["runs"]] == ["v2", "v1"]
    stages = [s["stage"] for s in status["runs"][0]["stages"]]
    assert stages == ["starting", "training", "done"]
    again = press_start_training(client, 7)  # idle again: a new job
    assert again["status"] == "queued" and again["job"] != first["job"]


def test_a_state_whose_job_vanished_does_not_block_training(client, private_redis):
    first = press_start_training(client, 7)
    conn = redis.Redis.from_url(private_redis.url)
    conn.delete(f"rq:job:{first['job']}")  # e.g. flushed or expired behind our back
    conn.delete(client.train_queue.key)
    assert press_start_training(client, 7)["status"] == "queued"


@pytest.mark.parametrize("project", [0, -1, 2**31, 10**30])
def test_project_ids_out_of_range_are_refused(client, project):
    with pytest.raises(InputError, match="out of range"):
        press_start_training(client, project)
    with pytest.raises(InputError, match="out of range"):
        TrainingRuns(client.redis).count_annotation(project)
    assert client.train_queue.count == 0


def test_start_training_route_checks_the_project_and_the_label_studio(private_redis, weights_dir):
    from fastapi.testclient import TestClient

    from dextr_backend.labelstudio_api.app import create_app

    for ls_url in (None, "http://ls.example:8080"):
        app = create_app(env_settings(redis_url=private_redis.url, label_studio_url=ls_url, device="cpu"))
        with TestClient(app) as c:
            huge = c.post("/webhook", json={"action": "START_TRAINING", "project": 10**30})
            assert huge.status_code == 422 and "out of range" in huge.json()["detail"]
            r = c.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3}})
            if ls_url is None:
                assert r.status_code == 422 and "no Label Studio" in r.json()["detail"]
            else:
                assert r.status_code == 201 and r.json()["training"]["status"] == "queued"
                job = r.json()["training"]["job"]
    conn = redis.Redis.from_url(private_redis.url)
    assert conn.llen(f"rq:queue:{TRAIN_QUEUE}") == 1
    from rq.job import Job

    assert Job.fetch(job, connection=conn).args == (3,)  # the job names the project, nothing else


def test_train_status_command_and_route_data(client, private_redis, capsys):
    press_start_training(client, 7)
    (status,) = [j for j in training_status(client) if j["project"] == 7]
    assert status["status"] == "queued" and status["job"].startswith("train-project-7-")
    assert status["runs"] == [] and status["progress"] == {"stage": "queued"}
    assert main(["train-status", "--redis-url", private_redis.url]) == 0
    table = capsys.readouterr().out
    assert "project 7: queued" in table
    assert main(["train-status", "--redis-url", private_redis.url, "--json"]) == 0
    assert any(j["project"] == 7 for j in json.loads(capsys.readouterr().out)["jobs"])


def test_train_status_without_redis_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["train-status"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err
    assert main(["train-status", "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "Redis is unreachable" in capsys.readouterr().err
