"""Retraining requests on a real Redis: one job per project, duplicates coalesced, status shown."""

from __future__ import annotations

import json

import pytest
import redis
from rq.job import Job, JobStatus

from dextr_backend.cli import main
from dextr_backend.queue.client import TRAIN_AGAIN_KEY, QueueClient


@pytest.fixture()
def client(redis_server):
    conn = redis.Redis.from_url(redis_server.url)
    for key in list(conn.scan_iter("rq:job:train-project-*")) + list(conn.scan_iter("dextr:train:*")):
        conn.delete(key)
    conn.delete("rq:queue:dextr-train")
    return QueueClient(redis_server.url)


def test_duplicates_are_coalesced_and_a_request_during_a_run_schedules_one_more(client):
    assert client.enqueue_training(7, "http://ls:8080", "key")["status"] == "queued"
    assert client.enqueue_training(7, "http://ls:8080", "key")["status"] == "coalesced"
    assert client.train_queue.count == 1
    assert client.enqueue_training(8, "http://ls:8080", "key")["status"] == "queued"   # other project
    job = Job.fetch("train-project-7", connection=client.redis)
    job.set_status(JobStatus.STARTED)            # as a training worker does when it takes the job
    answer = client.enqueue_training(7, "http://ls:8080", "key")
    assert answer["status"] == "scheduled after the running job"
    assert client.redis.exists(TRAIN_AGAIN_KEY.format(project=7))


def test_train_status_command_and_route_data(client, redis_server, capsys):
    client.enqueue_training(7, "http://ls:8080", "key")
    (status,) = [j for j in client.training_status() if j["project"] == 7]
    assert status["status"] == "queued" and status["job"] == "train-project-7"
    assert main(["train-status", "--redis-url", redis_server.url]) == 0
    table = capsys.readouterr().out
    assert "queued" in table and "7" in table
    assert main(["train-status", "--redis-url", redis_server.url, "--json"]) == 0
    assert any(j["project"] == 7 for j in json.loads(capsys.readouterr().out)["jobs"])


def test_train_status_without_redis_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["train-status"]) == 2
    assert "REDIS_URL" in capsys.readouterr().err
    assert main(["train-status", "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "Redis is unreachable" in capsys.readouterr().err
