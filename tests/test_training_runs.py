"""A project's training runs in their one home (``dextr_backend.training_runs``): the queue stays
transport only, Label Studio project ids are parsed once, runs written in Redis by earlier versions
still read, a dead worker's run is interrupted and requeued by the reaper's hook, and Redis down is
an answer. Races and the real job loop are in test_queue_training, real training in test_training_jobs."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue, SimpleWorker

from dextr_backend.errors import InputError, ServiceUnavailable
from dextr_backend.labelstudio import jobs
from dextr_backend.labelstudio.protocol import project_id
from dextr_backend.queue import TRAIN_QUEUE
from dextr_backend.queue.liveness import heartbeat
from dextr_backend.queue.reaper import reap_worker
from dextr_backend.training_runs import MAX_PROJECT_ID, Run, TrainingRuns, training_project

PACKAGE = Path(__file__).resolve().parents[1] / "dextr_backend"


def imports_in(source: str, package: list[str]) -> set[str]:
    """Dotted names a module of ``package`` imports, relative imports resolved and imported names
    kept as possible modules (``from .. import labelstudio`` is ``dextr_backend.labelstudio``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def label_studio(name: str) -> bool:
    return name == "dextr_backend.labelstudio" or name.startswith("dextr_backend.labelstudio.")


def test_the_queue_imports_nothing_of_label_studio():
    found = []
    for path in sorted((PACKAGE / "queue").rglob("*.py")):
        package = list(path.relative_to(PACKAGE.parent).parts[:-1])
        names = imports_in(path.read_text(encoding="utf-8"), package)
        found += [f"{path.relative_to(PACKAGE.parent)} imports {name}" for name in sorted(names) if label_studio(name)]
    assert not found, "\n".join(found)
    queue = ["dextr_backend", "queue"]  # a test of the test: every way of writing one is seen
    for planted in (
        "from ..labelstudio import jobs",
        "from .. import labelstudio",
        "import dextr_backend.labelstudio",
        "from dextr_backend import labelstudio",
        "from ..labelstudio.protocol import project_id",
    ):
        assert any(label_studio(n) for n in imports_in(planted, queue)), planted
    assert not any(label_studio(n) for n in imports_in("from ..training_runs import TrainingRuns", queue))


def test_project_ids_are_parsed_in_one_place():
    """``MAX_PROJECT_ID`` is assigned once in the package, and nothing in the queue parses ids."""
    homes = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MAX_PROJECT_ID" for t in node.targets)
    ]
    assert homes == ["dextr_backend/training_runs.py"]
    for path in (PACKAGE / "queue").rglob("*.py"):
        defined = {
            node.name
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.FunctionDef)
        }
        assert not defined & {"training_project", "project_id"}, path


@pytest.mark.parametrize(
    "value, expected",
    [
        (3, 3),
        ("3", 3),
        ("3.1700000000", 3),
        ({"id": 3}, 3),
        ({"id": "12.5"}, 12),
        (" 7 ", 7),
        (MAX_PROJECT_ID, MAX_PROJECT_ID),
        (str(MAX_PROJECT_ID), MAX_PROJECT_ID),
        ("0000000005", 5),
    ],
)
def test_a_project_id_as_label_studio_sends_it(value, expected):
    assert training_project(value) == expected
    assert project_id(value) == expected


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, "names no project"),
        ({}, "names no project"),
        ({"id": None}, "names no project"),
        ("abc", "not a number"),
        ("", "not a number"),
        (True, "not a number"),
        (3.0, "not a number"),
        ([3], "not a number"),
        ("+3", "not a number"),
        ("3_0", "not a number"),
        ("²", "not a number"),
        (0, "out of range"),
        (-1, "out of range"),
        ("-4.2", "out of range"),
        (2**31, "out of range"),
        (10**30, "out of range"),
        ("9" * 5000, "out of range"),
    ],
)
def test_a_project_id_refused_says_why(value, reason):
    with pytest.raises(InputError, match=reason):
        training_project(value)
    assert project_id(value) is None


@pytest.fixture()
def conn(private_redis):
    return redis.Redis.from_url(private_redis.url)


def test_runs_written_by_earlier_versions_still_read(conn):
    """The key layout is a contract with what is already in Redis: a state hash, its runs list and a
    run record written by hand under the old names read as before, and the next run finds the last
    trained version."""
    record = {
        "run": "4.1",
        "job": "train-project-4-1",
        "project": 4,
        "worker": "w1",
        "status": "finished",
        "started": "2026-01-01T00:00:00+00:00",
        "ended": "2026-01-01T00:10:00+00:00",
        "note": None,
        "stage": "done",
        "stages": [],
        "progress": {"epochs_done": 6, "epochs": 6},
        "error": None,
        "result": {"version": "v7", "promoted": True, "data_hash": "abc", "started_from": "base"},
    }
    conn.hset(
        "dextr:train:4",
        mapping={
            "state": "idle",
            "job": "train-project-4-1",
            "again": 0,
            "jobs": 1,
            "runs": 1,
            "owner": "",
            "worker": "w1",
            "queued_at": "2026-01-01T00:00:00",
        },
    )
    conn.sadd("dextr:train:projects", 4)
    conn.lpush("dextr:train:4:runs", "4.1")
    conn.set("dextr:train:4:run:4.1", json.dumps(record))
    conn.set("dextr:annotations:4", 41)
    runs = TrainingRuns(conn)
    (status,) = runs.status(heartbeat)
    assert status["status"] == "finished" and status["result"] == {"ok": record["result"]}
    assert status["runs"] == [record] and status["progress"]["epochs_done"] == 6
    assert runs.count_annotation({"id": 4}) == 42
    answer = runs.request(Queue(TRAIN_QUEUE, connection=conn), jobs.train_project, "4.1700000000")
    assert answer == {"status": "queued", "job": "train-project-4-2"}
    run = Run.begin(conn, 4, answer["job"], "w2")
    assert run.id == "4.2"
    assert run.last_trained() == {"run": "4.1", "version": "v7", "data_hash": "abc", "started_from": "base"}


def test_a_dead_workers_run_is_interrupted_and_requeued_by_the_reaper(conn):
    """The reaper's hook (``TrainingRuns.job_lost``) in its transaction: the state is queued again
    with a note, the interrupted run's record says so, and the job is back at the front of the queue."""
    queue = Queue(TRAIN_QUEUE, connection=conn)
    runs = TrainingRuns(conn)
    job_id = runs.request(queue, jobs.train_project, 9)["job"]
    ghost = SimpleWorker([queue], connection=conn, name="ghost")  # takes the job, then dies silently
    ghost.register_birth()
    job = queue.dequeue_any([queue], None, connection=conn)[0]
    ghost.prepare_execution(job)
    ghost.prepare_job_execution(job)
    Run.begin(conn, 9, job_id, "ghost").stage("training")
    assert runs.status(heartbeat)[0]["note"] == "worker ghost is not answering; its job is requeued within a minute"
    assert reap_worker(conn, "ghost", (TRAIN_QUEUE,)) == [f"{job_id}: requeued after worker ghost stopped answering"]
    (status,) = runs.status(heartbeat)
    assert status["state"] == "queued" and status["note"] == "requeued after worker ghost stopped answering"
    (run,) = status["runs"]
    assert run["status"] == "interrupted" and run["stages"][-1]["stage"] == "interrupted"
    assert queue.job_ids == [job_id]
    assert runs.request(queue, jobs.train_project, 9)["status"] == "coalesced"


def test_redis_down_is_an_answer():
    down = TrainingRuns(
        redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    )
    for call in (
        lambda: down.status(heartbeat),
        lambda: down.count_annotation(3),
        lambda: down.request(Queue(TRAIN_QUEUE, connection=down.conn), jobs.train_project, 3),
    ):
        with pytest.raises(ServiceUnavailable, match="Redis is unreachable"):
            call()
