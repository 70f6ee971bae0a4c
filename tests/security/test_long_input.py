"""Input limits before any work (issue 26): a megabyte of URL is refused at parsing with a 4xx while
``/health`` answers, in both modes, and in queue mode no worker misses a heartbeat; an image URL
has a length limit, while a ``data:image`` URI in the task is the image itself (decoded, never
fetched, within the image limits). Real ``dextr-backend serve`` processes, real Redis, real workers."""

from __future__ import annotations

import base64
import threading

import cv2
import httpx
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from services import env_settings, served_in_mode
from test_labelstudio_backend import CLICKS, CONFIG

from dextr_backend.labelstudio_api.app import create_app

MEGABYTE_URL = "http://127.0.0.1/" + "a" * 1024 * 1024


def predict(image: str, result=CLICKS) -> dict:
    return {
        "tasks": [{"id": 7, "data": {"image": image}}],
        "project": "3.17",
        "label_config": CONFIG,
        "params": {"context": {"result": result}},
    }


@pytest.fixture(params=["in-process", "queue"])
def served(request, random_store, image_server, tmp_path):
    env = {
        "DEXTR_WEIGHTS_DIR": str(random_store),
        "DEXTR_DEVICE": "cpu",
        "DEXTR_THREADS": "1",
        "LOG_LEVEL": "WARNING",
        "DEXTR_ALLOWED_HOSTS": image_server,
    }
    redis_url = request.getfixturevalue("private_redis").url if request.param == "queue" else None
    yield from served_in_mode(request.param, env, tmp_path, redis_url)


@pytest.mark.slow
def test_a_megabyte_url_is_refused_while_health_answers(served, image_server):
    """Ten 1 MB URLs, one after the other, while ``/health`` is asked again and again: every URL gets
    its 4xx, ``/health`` answers 200 while they are being refused, and (queue mode) the worker's
    heartbeat never lapses. Before, masking such a URL held Python's lock for many minutes."""
    mode, server, worker = served
    answers, healths, gaps = [], [], []
    sending = threading.Event()
    sending.set()

    def long_urls():
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for _ in range(10):
                answers.append(http.post("/predict", json=predict(MEGABYTE_URL)))
        sending.clear()

    def heartbeat(conn, key):
        while sending.is_set():
            if not conn.exists(key):
                gaps.append(key)
            threading.Event().wait(0.05)

    threads = [threading.Thread(target=long_urls)]
    if worker:
        conn = redis.Redis.from_url(worker.redis_url)
        (key,) = [k.decode() for k in conn.scan_iter("dextr:alive:*") if f"-{worker.proc.pid}-" in k.decode()]
        threads.append(threading.Thread(target=heartbeat, args=(conn, key)))
    for t in threads:
        t.start()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        while sending.is_set():
            health = http.get("/health")
            healths.append((health.status_code, sending.is_set()))
    for t in threads:
        t.join(300)
    assert len(answers) == 10
    for r in answers:
        assert r.status_code == 422 and "DEXTR_MAX_STRING_KB" in r.json()["detail"], (r.status_code, r.text[:300])
    assert all(status == 200 for status, _ in healths)
    assert any(still_sending for _, still_sending in healths), "/health never answered while URLs were refused"
    assert not gaps, f"{mode}: the worker missed its heartbeat {len(gaps)} times"
    with httpx.Client(base_url=server.url, timeout=60) as http:
        ok = http.post("/predict", json=predict(f"http://{image_server}/ellipse.png"))
    assert ok.status_code == 200, ok.text


@pytest.fixture()
def client(random_store, image_server):
    with TestClient(create_app(env_settings(allowed_hosts=(image_server,), device="cpu", max_image_mb=1))) as c:
        yield c


def test_an_image_url_over_the_limit_is_a_clear_422(client, image_server):
    base = f"http://{image_server}/missing.png?pad="
    at_limit = base + "x" * (8192 - len(base))
    r = client.post("/predict", json=predict(at_limit))
    assert r.status_code == 422 and "HTTP 404" in r.json()["detail"]  # fetched: within the limit
    r = client.post("/predict", json=predict(at_limit + "x"))
    assert r.status_code == 422 and r.json()["detail"] == (
        "task 7: the image URL under data['image'] is 8193 characters long; the limit is 8192 (DEXTR_MAX_URL_CHARS)"
    )
    r = client.post("/setup", json={"project": "3.17", "hostname": "http://ls:8080/" + "h" * 9000})
    assert r.status_code == 422 and "'hostname' is 9015 characters long" in r.json()["detail"]


def data_uri(image: np.ndarray, kind: str = "png") -> str:
    ok, encoded = cv2.imencode("." + kind, image)
    assert ok
    return f"data:image/{kind};base64," + base64.b64encode(encoded.tobytes()).decode()


def test_a_data_image_uri_is_the_image_itself(client):
    """Label Studio accepts ``data:image/...;base64,`` task data: it is decoded as the picture, with no
    fetch (no host is allowed here for it: a fetch would be refused)."""
    img = np.full((120, 160, 3), 30, np.uint8)
    cv2.ellipse(img, (80, 60), (50, 40), 0, 0, 360, (230, 40, 40), -1)
    r = client.post("/predict", json=predict(data_uri(img)))
    assert r.status_code == 200, r.text
    (brush,) = [x for x in r.json()["results"][0]["result"] if x["type"] == "brushlabels"]
    assert brush["original_width"] == 160 and brush["original_height"] == 120


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: data_uri(np.random.default_rng(0).integers(0, 255, (800, 800, 3), dtype=np.uint8)),
            "limit is 1 MB of image (DEXTR_MAX_IMAGE_MB)",
        ),
        (lambda: data_uri(np.zeros((10000, 9000), np.uint8)), "pixels (DEXTR_MAX_IMAGE_PIXELS)"),
        (lambda: "data:image/png;base64,iVBORw0KGgo=", "not a readable image"),
        (lambda: "data:image/png;base64,@@@not base64@@@", "not valid base64"),
        (lambda: "data:text/html;base64,PGgxPmhpPC9oMT4=", "must be an image"),
    ],
)
def test_a_bad_data_image_uri_is_a_clear_422(client, make, message):
    r = client.post("/predict", json=predict(make()))
    assert r.status_code == 422 and message in r.json()["detail"], r.text[:300]
    assert len(r.json()["detail"]) < 400
