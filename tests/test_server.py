"""The HTTP backend, in-process and through a real Redis with real worker processes."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from services import Worker, env_settings
from test_labelstudio_backend import CLICKS, CONFIG, kp

from dextr_backend.labelstudio_api.app import create_app
from dextr_backend.models import build_model


@pytest.fixture()
def store_env(random_store):
    """A user store holding one small random model as the current version."""
    return {"DEXTR_WEIGHTS_DIR": str(random_store)}


def body(host, result=CLICKS, image="ellipse.png", **extra):
    return {
        "tasks": [{"id": 1, "data": {"image": f"http://{host}/{image}"}}],
        "project": "3.1700000000",
        "label_config": CONFIG,
        "params": {"context": {"result": result}},
        **extra,
    }


@pytest.fixture()
def client(store_env, image_server):
    app = create_app(env_settings(allowed_hosts=(image_server,), device="cpu"))
    with TestClient(app) as c:
        yield c


def test_health_setup_versions(client):
    health = client.get("/health").json()
    assert health["status"] == "UP" and health["model_version"] == "served" and health["mode"] == "in-process"
    assert client.post(
        "/setup", json={"project": "3.17", "schema": CONFIG, "hostname": "http://ls:8080", "access_token": "t"}
    ).json() == {"model_version": "served"}
    assert "served" in client.get("/versions").json()["versions"]


def test_health_names_the_engine_once_the_model_is_loaded(client, image_server):
    """Asking /health loads no model; after the first prediction it says what runs pass 1."""
    assert "engine" not in client.get("/health").json()
    assert client.post("/predict", json=body(image_server)).status_code == 200
    assert client.get("/health").json()["engine"] == client.app.state.resident.get().engine_name


def test_interactive_predict_in_process(client, image_server):
    r = client.post("/predict", json=body(image_server))
    assert r.status_code == 200
    (entry,) = r.json()["results"]
    assert entry["model_version"] == "served" and entry["result"][0]["type"] == "brushlabels"
    few = client.post("/predict", json=body(image_server, result=CLICKS[:2])).json()
    assert few["results"] == [[]]  # no prediction for this task (see test_labelstudio_backend)


def test_metrics_are_prometheus_text(client, image_server):
    client.post("/predict", json=body(image_server))
    text = client.get("/metrics").text
    assert 'dextr_requests_total{route="/predict",status="200"} 1' in text
    assert 'dextr_request_seconds_count{route="/predict"} 1' in text
    assert 'dextr_model_info{version="served"} 1' in text


BAD_PREDICTS = [
    (b"{not json", 400, "not valid JSON"),
    (b"[]", 422, "JSON object"),
    (json.dumps({"tasks": []}).encode(), 422, "tasks"),
    (json.dumps({"tasks": [{"id": 1}], "label_config": 5}).encode(), 422, "label_config"),
    (json.dumps({"tasks": [{"id": 1}], "label_config": "<View"}).encode(), 422, "XML"),
]


@pytest.mark.parametrize("raw, status, message", BAD_PREDICTS)
def test_malformed_predict_bodies(client, raw, status, message):
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["detail"]


def test_bad_content_gets_4xx_never_500(client, image_server):
    outside = kp(10, 10)
    outside["value"]["x"] = 150
    wrong_type = kp(10, 10)
    wrong_type["value"]["x"] = "left"
    cases = [
        (body(image_server, result=[outside] + CLICKS[1:]), "outside"),
        (body(image_server, result=[wrong_type] + CLICKS[1:]), "must be a number"),
        (body(image_server, image="corrupt.png"), "not a readable image"),
        (body(image_server, image="huge.png"), "pixels"),
        (body(image_server, image="missing.png"), "404"),
        (body("127.0.0.1:1", image="x.png"), "not allowed"),
        (body(image_server, result="clicks"), "list"),
        ({**body(image_server), "tasks": [{"id": 1, "data": {}}]}, "no image"),
    ]
    for payload, message in cases:
        r = client.post("/predict", json=payload)
        assert 400 <= r.status_code < 500, (message, r.status_code, r.text)
        assert message in r.json()["detail"], (message, r.json())


def test_unreachable_image_host_is_a_clear_4xx(store_env):
    app = create_app(env_settings(allowed_hosts=("127.0.0.1:1",), device="cpu"))
    with TestClient(app) as c:
        r = c.post("/predict", json=body("127.0.0.1:1"))
    assert r.status_code == 422 and "could not connect" in r.json()["detail"]


@pytest.mark.parametrize(
    "payload, status, answer",
    [
        ({"action": "SOMETHING_ELSE"}, 200, {"status": "Unknown event"}),
        (
            {"action": "ANNOTATION_CREATED", "project": {"id": 3}},
            201,
            {"status": "ok", "training": "off (DEXTR_TRAIN_EVERY=0)"},
        ),
    ],
)
def test_webhook_events_are_answered_and_say_what_happened(client, payload, status, answer):
    """Label Studio sends every event to /webhook; only training events do anything, and the
    answer says so (counting through webhooks is tested with Redis in test_training_jobs)."""
    r = client.post("/webhook", json=payload)
    assert r.status_code == status and r.json() == answer


@pytest.mark.parametrize("raw, message", [(b"nope", "not valid JSON"), (b'{"no": "action"}', "action")])
def test_webhook_bad_input(client, raw, message):
    r = client.post("/webhook", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and message in r.json()["detail"]


@pytest.mark.parametrize("route", ["/predict", "/setup", "/webhook"])
@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonp"],
)
@pytest.mark.slow
def test_a_body_that_is_not_declared_json_is_415(client, image_server, route, content_type):
    """A page on another site may post text/plain or a form without a CORS preflight: only JSON is read,
    and the body is not looked at (here a valid request that would otherwise be answered 200)."""
    raw = json.dumps(body(image_server) if route == "/predict" else {"project": "3.17", "action": "X"}).encode()
    r = client.post(route, content=raw, headers={"content-type": content_type} if content_type else {})
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["detail"], r.text
    ok = client.post(route, content=raw, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200, ok.text


def test_training_needs_the_queue(client):
    r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3}})
    assert r.status_code == 503 and "REDIS_URL" in r.json()["detail"]


def test_basic_auth(store_env):
    app = create_app(env_settings(basic_auth_user="ann", basic_auth_pass="s3cret", device="cpu"))
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200  # open for probes
        assert c.get("/versions").status_code == 401
        good = base64.b64encode(b"ann:s3cret").decode()
        assert c.get("/versions", headers={"Authorization": f"Basic {good}"}).status_code == 200
        bad = base64.b64encode(b"ann:nope").decode()
        assert c.get("/versions", headers={"Authorization": f"Basic {bad}"}).status_code == 401


# ---------------------------------------------------------------- queue mode: real Redis, real workers


@pytest.fixture()
def queue_env(store_env, image_server, redis_server, tmp_path):
    import redis

    conn = redis.Redis.from_url(redis_server.url)
    for key in conn.scan_iter("dextr:alive:*"):
        conn.delete(key)
    env = {**store_env, "DEXTR_ALLOWED_HOSTS": image_server, "DEXTR_DEVICE": "cpu", "DEXTR_THREADS": "1"}
    workers: list[Worker] = []

    def start(n=1, url=None):
        for _ in range(n):
            workers.append(Worker(url or redis_server.url, env, log=tmp_path / f"worker{len(workers)}.log").start())
        return workers

    yield {"url": redis_server.url, "start": start, "workers": workers, "image_server": image_server}
    for w in workers:
        w.stop()


def queue_client(url, host, timeout=20.0):
    return TestClient(
        create_app(env_settings(redis_url=url, allowed_hosts=(host,), device="cpu", predict_timeout=timeout))
    )


@pytest.mark.slow
def test_a_worker_s_error_is_redacted_and_logged_as_in_process(queue_env, caplog):
    """Issue 29: a queue worker's error message went out as it came, past the redaction and the
    log line every in-process error gets. Here the worker's message quotes the image URL, which
    carries the API's Label Studio key in a query value no masking rule knows by name."""
    import dataclasses
    import logging

    queue_env["start"](1)
    host, key = queue_env["image_server"], "sekrit-key-0123456789"
    settings = env_settings(redis_url=queue_env["url"], allowed_hosts=(host,), device="cpu", predict_timeout=20.0)
    settings = dataclasses.replace(settings, label_studio_api_key=key)
    with (
        caplog.at_level(logging.INFO, logger="dextr_backend.labelstudio_api.app"),
        TestClient(create_app(settings)) as c,
    ):
        r = c.post("/predict", json=body(host, image=f"corrupt.png?q={key}"))
    assert r.status_code == 422 and "not a readable image" in r.json()["detail"], r.text
    assert key not in r.text
    refused = [rec for rec in caplog.records if rec.getMessage() == "request refused"]
    assert refused and key not in refused[-1].detail and "not a readable image" in refused[-1].detail


def test_queue_without_workers_says_so(queue_env):
    with queue_client(queue_env["url"], queue_env["image_server"]) as c:
        r = c.post("/predict", json=body(queue_env["image_server"]))
        assert r.status_code == 503 and "no worker" in r.json()["detail"]
        h = c.get("/health")
        assert h.status_code == 503 and "no worker" in h.json()["reason"]


@pytest.mark.slow
def test_predict_through_a_real_worker(queue_env):
    queue_env["start"](1)
    host = queue_env["image_server"]
    with queue_client(queue_env["url"], host) as c:
        assert c.get("/health").json()["workers"] == 1
        r = c.post("/predict", json=body(host))
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["result"][0]["type"] == "brushlabels"
        bad = c.post("/predict", json=body(host, image="corrupt.png"))  # the worker's own 4xx message
        assert bad.status_code == 422 and "not a readable image" in bad.json()["detail"]


def _slow_batch(host, n_tasks=40):
    """Batch mode over many tasks: long enough on a CPU to kill a worker in the middle."""
    tasks = [
        {"id": i, "data": {"image": f"http://{host}/ellipse.png"}, "annotations": [{"id": i, "result": CLICKS * 4}]}
        for i in range(n_tasks)
    ]
    return {"tasks": tasks, "project": "3.17", "label_config": CONFIG, "params": {"context": None}}


def _kill_when_busy(workers, url, after_start=0.3):
    import redis
    from rq.registry import StartedJobRegistry

    conn = redis.Redis.from_url(url)
    registry = StartedJobRegistry("dextr-predict", connection=conn)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for job_id in registry.get_job_ids():
            from rq.job import Job

            name = Job.fetch(job_id, connection=conn).worker_name or ""
            for w in workers:
                if f"-{w.proc.pid}-" in name:
                    time.sleep(after_start)
                    w.kill()
                    return w
        time.sleep(0.05)
    raise AssertionError("no job started")


@pytest.mark.slow
def test_a_worker_killed_mid_job_is_retried_on_another(queue_env):
    workers = queue_env["start"](2)
    host = queue_env["image_server"]
    with queue_client(queue_env["url"], host, timeout=60) as c:
        result = {}
        t = threading.Thread(target=lambda: result.update(r=c.post("/predict", json=_slow_batch(host))))
        t.start()
        killed = _kill_when_busy(workers, queue_env["url"])
        t.join(90)
        assert killed.proc.returncode is not None
        r = result["r"]
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 40


@pytest.mark.slow
def test_a_worker_killed_mid_job_alone_gives_a_clear_error_in_time(queue_env):
    workers = queue_env["start"](1)
    host = queue_env["image_server"]
    with queue_client(queue_env["url"], host, timeout=60) as c:
        result = {}
        started = time.monotonic()
        t = threading.Thread(target=lambda: result.update(r=c.post("/predict", json=_slow_batch(host))))
        t.start()
        _kill_when_busy(workers, queue_env["url"])
        t.join(90)
        r = result["r"]
        assert r.status_code == 503 and "worker" in r.json()["detail"]
        assert time.monotonic() - started < 30  # seconds, not the 60 s timeout


@pytest.mark.slow
def test_redis_down_and_back_without_restarts(store_env, image_server, private_redis, tmp_path):
    env = {**store_env, "DEXTR_ALLOWED_HOSTS": image_server, "DEXTR_DEVICE": "cpu"}
    worker = Worker(private_redis.url, env, log=tmp_path / "worker.log").start()
    try:
        with queue_client(private_redis.url, image_server) as c:
            assert c.post("/predict", json=body(image_server)).status_code == 200
            private_redis.stop()
            r = c.post("/predict", json=body(image_server))
            assert r.status_code == 503 and "Redis is unreachable" in r.json()["detail"]
            h = c.get("/health")
            assert h.status_code == 503 and "Redis is unreachable" in h.json()["reason"]
            private_redis.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if c.get("/health").status_code == 200:
                    break
                time.sleep(0.5)
            assert c.get("/health").status_code == 200, "the worker did not come back to Redis"
            assert c.post("/predict", json=body(image_server)).status_code == 200
    finally:
        worker.stop()


@pytest.mark.slow
def test_a_negative_keypoint_changes_the_mask_through_the_queue(tmp_path, image_server, redis_server):
    """Corrections travel through Redis to a worker, whose version (``lite0c``) uses them."""
    from test_labelstudio_backend import corrective_store, mask_of

    store = corrective_store(tmp_path)
    env = {
        "DEXTR_WEIGHTS_DIR": str(store.root),
        "DEXTR_ALLOWED_HOSTS": image_server,
        "DEXTR_DEVICE": "cpu",
        "DEXTR_THREADS": "1",
    }
    worker = Worker(redis_server.url, env, log=tmp_path / "worker.log").start()
    try:
        with queue_client(redis_server.url, image_server, timeout=60) as c:
            plain = c.post("/predict", json=body(image_server))
            corrected = c.post("/predict", json=body(image_server, result=CLICKS + [kp(80, 60, positive=False)]))
        assert plain.status_code == corrected.status_code == 200, (plain.text, corrected.text)
        assert plain.json()["model_version"] == "corrective"
        assert (mask_of(plain.json()) != mask_of(corrected.json())).any()
    finally:
        worker.stop()


def test_versions_say_which_take_corrections(tmp_path, monkeypatch, capsys):
    from test_labelstudio_backend import corrective_store

    from dextr_backend.cli import main

    store = corrective_store(tmp_path)
    store.add_version(build_model("lite0").state_dict(), "lite0", name="plain")
    monkeypatch.setenv("DEXTR_WEIGHTS_DIR", str(store.root))
    with TestClient(create_app(env_settings(device="cpu"))) as c:
        listing = c.get("/versions").json()
    assert {"corrective", "plain"} <= set(listing["versions"])
    assert "corrective" in listing["take_corrections"] and "plain" not in listing["take_corrections"]
    assert main(["weights", "list", "--json"]) == 0
    flags = {v["name"]: v["takes_corrections"] for v in json.loads(capsys.readouterr().out)["versions"]}
    assert flags["corrective"] is True and flags["plain"] is False
