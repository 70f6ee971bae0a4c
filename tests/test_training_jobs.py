"""Retraining jobs end to end with real Redis, real ``dextr-backend worker`` processes, real (tiny)
training, and a small Label Studio stand-in on loopback that checks the token it is sent:

- a training worker killed mid-epoch: its job is requeued within a minute, the restarted worker
  resumes the run from its checkpoint, and the status says what happened;
- two Start Training presses moments apart on an idle worker train once;
- the Label Studio token never lands in Redis (jobs, results, status) or in the worker logs.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import cv2
import pytest
import redis
import torch
from services import Backend, Worker, poll, press_start_training, training_status
from test_training import make_shapes

from dextr_backend.labelstudio.regions import mask_to_brush
from dextr_backend.models import build_model
from dextr_backend.queue.client import QueueClient
from dextr_backend.weights.store import WeightsStore

TOKEN = "dextr-test-token-5f1c9a7e3b"
PROJECT = 5
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Object"/></BrushLabels>
</View>"""


class FakeLabelStudio:
    """Projects, tasks with accepted brush labels, and their pictures; every request must carry
    ``Token <TOKEN>``."""

    def __init__(self, folder: Path):
        images = sorted((folder / "images").glob("*.png"))
        self.pictures, self.tasks = {}, []
        for tid, path in enumerate(images, start=1):
            mask = cv2.imread(str(folder / "masks" / path.name), cv2.IMREAD_GRAYSCALE) > 0
            self.pictures[f"/data/upload/{tid}.png"] = path.read_bytes()
            h, w = mask.shape
            self.tasks.append(
                {
                    "id": tid,
                    "data": {"image": f"/data/upload/{tid}.png"},
                    "annotations": [
                        {
                            "id": tid,
                            "was_cancelled": False,
                            "created_at": "2026-01-01T00:00:00Z",
                            "result": [
                                {
                                    "from_name": "tag",
                                    "to_name": "image",
                                    "type": "brushlabels",
                                    "original_width": w,
                                    "original_height": h,
                                    "image_rotation": 0,
                                    "value": {"format": "rle", "rle": mask_to_brush(mask), "brushlabels": ["Object"]},
                                }
                            ],
                        }
                    ],
                }
            )
        self.refused = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.headers.get("Authorization") != f"Token {TOKEN}":
                    owner.refused += 1
                    return self._send(401, b'{"detail": "no token"}')
                path = urllib.parse.urlsplit(self.path).path
                if path == f"/api/projects/{PROJECT}":
                    return self._send(200, json.dumps({"id": PROJECT, "label_config": CONFIG}).encode())
                if path == "/api/tasks":
                    return self._send(200, json.dumps({"tasks": owner.tasks, "total": len(owner.tasks)}).encode())
                if path in owner.pictures:
                    return self._send(200, owner.pictures[path], "image/png")
                return self._send(404, b"{}")

            def _send(self, code, data, kind="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()


@pytest.fixture()
def label_studio(tmp_path):
    ls = FakeLabelStudio(make_shapes(tmp_path / "labels", n=8, seed=3))
    yield ls
    ls.stop()


@pytest.fixture()
def env(tmp_path, label_studio, private_redis):
    torch.manual_seed(0)
    store = tmp_path / "store"
    WeightsStore(store).add_version(
        build_model("lite0").state_dict(), "lite0", name="base", input_size=64, make_current=True
    )
    return {
        "REDIS_URL": private_redis.url,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": TOKEN,
        "DEXTR_WEIGHTS_DIR": str(store),
        "DEXTR_DATA_DIR": str(tmp_path / "data"),
        "DEXTR_DEVICE": "cpu",
        "DEXTR_THREADS": "1",
        "DEXTR_TRAIN_EPOCHS": "1",
        "DEXTR_TRAIN_SAMPLES": "32",
        "DEXTR_TRAIN_MAX_MINUTES": "10",
        "DEXTR_TRAIN_MIN_VAL_OBJECTS": "1",
        "LOG_LEVEL": "INFO",
    }


def worker_name(url: str, worker: Worker) -> str:
    for key in redis.Redis.from_url(url).scan_iter("dextr:alive:*"):
        if f"-{worker.proc.pid}-" in key.decode():
            return key.decode()[len("dextr:alive:") :]
    raise AssertionError("worker has no heartbeat")


def project_status(client: QueueClient) -> dict:
    (status,) = [p for p in training_status(client) if p["project"] == PROJECT]
    return status


def wait_until(condition, seconds: float, what: str, step: float = 0.2):
    value = poll(condition, seconds, step)
    if not value:
        raise AssertionError(f"not within {seconds:g} s: {what}")
    return value


def _redis_values(conn, key, kind: str) -> list:
    """Every value held under ``key``, whatever its Redis type."""
    if kind == "string":
        return [conn.get(key)]
    if kind == "hash":
        return list(conn.hgetall(key).values())
    if kind == "list":
        return conn.lrange(key, 0, -1)
    if kind == "set":
        return list(conn.smembers(key))
    if kind == "zset":
        return conn.zrange(key, 0, -1)
    if kind == "stream":
        return [v for _, fields in conn.xrange(key) for v in fields.values()]
    raise AssertionError(f"a Redis key of type {kind}")


def assert_token_nowhere(url: str, logs: list[Path]) -> None:
    """Every key and value in Redis (rq's compressed job data unpacked), and every log line."""
    conn = redis.Redis.from_url(url)
    secret = TOKEN.encode()
    for key in conn.scan_iter("*"):
        kind = conn.type(key).decode()
        values = _redis_values(conn, key, kind)
        for value in [key] + [v for v in values if v]:
            try:
                unpacked = zlib.decompress(value)
            except zlib.error:
                unpacked = b""
            assert secret not in value and secret not in unpacked, f"the token is in Redis under {key!r}"
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            assert TOKEN not in line, f"{log.name}: {line[:200]}"


@pytest.mark.slow
def test_a_killed_training_worker_is_replaced_and_the_run_resumes(env, private_redis, label_studio, tmp_path):
    env = {**env, "DEXTR_TRAIN_EPOCHS": "4", "DEXTR_TRAIN_SAMPLES": "64"}
    url = private_redis.url
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = Worker(url, env, queues="dextr-train", log=logs[0]).start()
    second = None
    try:
        dead = worker_name(url, first)
        client = QueueClient(url)
        job = press_start_training(client, PROJECT)["job"]
        wait_until(
            lambda: (project_status(client)["runs"] or [{}])[0].get("progress", {}).get("epochs_done", 0) >= 1,
            240,
            "the first epoch",
        )
        first.kill()  # kill -9 in the middle of epoch 2
        killed = time.monotonic()
        pressed = press_start_training(client, PROJECT)  # while the dead worker still looks busy
        assert pressed["job"] == job
        wait_until(lambda: "not answering" in (project_status(client)["note"] or ""), 5, "the status to notice")
        second = Worker(url, env, queues="dextr-train", log=logs[1]).start()
        replacement = worker_name(url, second)
        wait_until(
            lambda: (
                (project_status(client)["note"] or "").startswith(f"requeued after worker {dead} stopped answering")
                or project_status(client)["runs"][0]["worker"] == replacement
            ),
            60,
            "the job handed on",
        )
        assert time.monotonic() - killed < 60
        status = wait_until(
            lambda: (lambda s: s if s["status"] in ("finished", "failed") else None)(project_status(client)),
            300,
            "the resumed run to finish",
        )
        assert status["status"] == "finished", status
        resumed, interrupted = status["runs"][:2]
        assert interrupted["status"] == "interrupted" and interrupted["worker"] == dead
        assert interrupted["note"] == f"requeued after worker {dead} stopped answering"
        assert resumed["worker"] == replacement and resumed["job"] == job
        assert resumed["note"] == f"requeued after worker {dead} stopped answering"
        assert resumed["progress"]["resumed_from_epoch"] >= 1  # from the run's checkpoint
        assert resumed["result"]["version"] and resumed["result"]["reason"]
        from rq import Worker as RqWorker

        assert dead not in {w.name for w in RqWorker.all(connection=redis.Redis.from_url(url))}
        assert label_studio.refused == 0
        assert_token_nowhere(url, logs)
    finally:
        first.kill()
        if second:
            second.stop()


@pytest.mark.slow
def test_two_quick_presses_on_an_idle_worker_train_once(env, private_redis, label_studio, tmp_path):
    url = private_redis.url
    log = tmp_path / "worker.log"
    worker = Worker(url, env, queues="dextr-train", log=log).start()
    try:
        client = QueueClient(url)
        answers = [press_start_training(client, PROJECT)["status"]]
        time.sleep(0.057)
        answers.append(press_start_training(client, PROJECT)["status"])
        assert answers[0] == "queued" and answers[1] in ("coalesced", "scheduled after the running job")
        status = wait_until(
            lambda: (lambda s: s if s["state"] == "idle" else None)(project_status(client)), 300, "training to end"
        )
        runs = status["runs"]
        trained = [r for r in runs if "version" in (r["result"] or {})]
        assert len(trained) == 1 and len(runs) <= 2, runs
        if len(runs) == 2:  # the press came after the export began
            assert runs[0]["result"]["skipped"] and "labels are unchanged" in runs[0]["result"]["reason"]
        made = [v.name for v in WeightsStore(Path(env["DEXTR_WEIGHTS_DIR"])).versions() if not v.shipped]
        assert len(made) == 2, made  # base and one trained version
        assert label_studio.refused == 0
        assert_token_nowhere(url, [log])
    finally:
        worker.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    "patience, folds, epochs",
    [
        ("0", 2, 3),  # 8 labels: 2 fold models of 1 epoch each, then the shipped one
        ("1", 0, 1),  # early stopping: a hold-out split, one training (as from 60 labels on)
    ],
)
def test_a_run_reports_the_epochs_of_its_plan(env, private_redis, label_studio, tmp_path, patience, folds, epochs):
    """The run's total epochs come from its plan. Predicted apart from it, a hold-out run (60 labels
    or more, or DEXTR_TRAIN_PATIENCE) divided by its 0 folds and failed before training."""
    env = {**env, "DEXTR_TRAIN_PATIENCE": patience}
    log = tmp_path / "worker.log"
    worker = Worker(private_redis.url, env, queues="dextr-train", log=log).start()
    try:
        client = QueueClient(private_redis.url)
        press_start_training(client, PROJECT)
        status = wait_until(
            lambda: (lambda s: s if s["state"] == "idle" else None)(project_status(client)), 300, "training to end"
        )
        (run,) = status["runs"]
        assert run["status"] == "finished" and "version" in run["result"], run
        assert run["progress"]["folds"] == folds
        assert run["progress"]["epochs"] == run["progress"]["epochs_done"] == epochs
    finally:
        worker.stop()


def post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def annotation_event() -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}, "annotation": {"id": 1}, "task": {"id": 1}}


@pytest.mark.slow
def test_train_every_n_annotations_through_webhooks(env, private_redis, label_studio, tmp_path):
    """``DEXTR_TRAIN_EVERY=3``: the third annotation webhook, counted across two API processes,
    starts a run that a real training worker finishes with a new version."""
    env = {**env, "DEXTR_TRAIN_EVERY": "3"}
    logs = [tmp_path / "api1.log", tmp_path / "api2.log", tmp_path / "trainer.log"]
    apis = [Backend(env, log=logs[0]).start(), Backend(env, log=logs[1]).start()]
    worker = Worker(private_redis.url, env, queues="dextr-train", log=logs[2]).start()
    try:
        answers = [post_json(apis[i % 2].url + "/webhook", annotation_event()) for i in range(3)]
        assert [status for status, _ in answers] == [201, 201, 201]
        assert [a["annotations_since_start"] for _, a in answers] == [1, 2, 3]
        assert answers[0][1]["training"] == answers[1][1]["training"] == "not yet"
        assert answers[2][1]["training"]["status"] == "queued"
        client = QueueClient(private_redis.url)
        status = wait_until(
            lambda: (lambda s: s if s["state"] == "idle" and s["runs"] else None)(project_status(client)),
            300,
            "the triggered run to end",
        )
        assert status["runs"][0]["status"] == "finished", status
        assert status["runs"][0]["result"]["version"] in {
            v.name for v in WeightsStore(Path(env["DEXTR_WEIGHTS_DIR"])).versions()
        }
        assert label_studio.refused == 0
        assert_token_nowhere(private_redis.url, logs)
    finally:
        worker.stop()
        for api in apis:
            api.stop()


@pytest.mark.slow
def test_setup_sent_to_one_api_process_is_used_by_another_and_the_worker(env, private_redis, label_studio, tmp_path):
    """``serve --workers N``: Label Studio's /setup lands in one process, *Start Training* in
    another; the record lives in Redis, so both the second process and the worker find it."""
    env = {k: v for k, v in env.items() if k not in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY")}
    logs = [tmp_path / "api1.log", tmp_path / "api2.log", tmp_path / "trainer.log"]
    first, second = Backend(env, log=logs[0]).start(), Backend(env, log=logs[1]).start()
    worker = Worker(private_redis.url, env, queues="dextr-train", log=logs[2]).start()
    try:
        press = {"action": "START_TRAINING", "project": {"id": PROJECT}}
        status, answer = post_json(second.url + "/webhook", press)
        assert status == 422 and "has not called /setup" in answer["detail"]
        status, _ = post_json(
            first.url + "/setup",
            {"project": f"{PROJECT}.1700000000", "hostname": label_studio.url, "access_token": TOKEN, "schema": CONFIG},
        )
        assert status == 200
        status, answer = post_json(second.url + "/webhook", press)
        assert status == 201 and answer["training"]["status"] == "queued", answer
        client = QueueClient(private_redis.url)
        result = wait_until(
            lambda: (lambda s: s if s["state"] == "idle" and s["runs"] else None)(project_status(client)),
            300,
            "the run to end",
        )
        assert result["runs"][0]["status"] == "finished", result
        assert label_studio.refused == 0  # the worker sent /setup's token
    finally:
        worker.stop()
        first.stop()
        second.stop()
