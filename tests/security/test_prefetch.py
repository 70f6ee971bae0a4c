"""A task opening fetches its picture in the background (issue 25), by the same rules as any fetch:
the first click then finds it in memory (in-process) or staged in Redis (queue mode), and a host
outside the allow-list is never contacted."""

from __future__ import annotations

import time

import cv2
import numpy as np
import redis
from fastapi.testclient import TestClient
from services import env_settings, poll
from test_labelstudio_backend import CLICKS, CONFIG

from dextr_backend.labelstudio_api.app import create_app


def ellipse_png() -> bytes:
    img = np.full((120, 160, 3), 30, np.uint8)
    cv2.ellipse(img, (80, 60), (50, 40), 0, 0, 360, (40, 40, 230), -1)
    return cv2.imencode(".png", img)[1].tobytes()


def opened(url: str) -> dict:
    """What Label Studio posts as a task opens: the task, no clicks."""
    return {"tasks": [{"id": 1, "data": {"image": url}}], "project": "3.17", "label_config": CONFIG}


def clicked(url: str) -> dict:
    return {**opened(url), "params": {"context": {"result": CLICKS}}}


def gets(server, path: str) -> int:
    return sum(1 for r in server.log if r["line"].split()[1] == path)


def test_an_opened_task_is_fetched_once_before_its_first_click(random_store, servers):
    host = servers("127.0.0.1")
    url = host.file("/task.png", ellipse_png())
    settings = env_settings(allowed_hosts=(host.netloc,), device="cpu")
    with TestClient(create_app(settings)) as client:
        cached = len(client.app.state.segmenter.cache)
        r = client.post("/predict", json=opened(url))
        assert r.status_code == 200 and r.json()["results"] == [[]]
        cache = client.app.state.segmenter.cache
        assert poll(lambda: gets(host, "/task.png") == 1 and len(cache) == cached + 1, 10), "not prefetched"
        assert gets(host, "/task.png") == 1
        r = client.post("/predict", json=clicked(url))
        assert r.status_code == 200 and r.json()["results"][0]["result"], r.text
    assert gets(host, "/task.png") == 1  # the click found it in memory


def test_an_opened_task_on_a_host_outside_the_allow_list_fetches_nothing(random_store, servers, caplog):
    allowed, other = servers("127.0.0.1"), servers("127.0.0.2")
    url = other.file("/secret.png", ellipse_png())
    settings = env_settings(allowed_hosts=(allowed.netloc,), device="cpu")
    with caplog.at_level("INFO"), TestClient(create_app(settings)) as client:
        cache = client.app.state.segmenter.cache  # the process's: other tests' pictures may be in it
        cached = len(cache)
        r = client.post("/predict", json=opened(url))
        assert r.status_code == 200 and r.json()["results"] == [[]]
        assert poll(lambda: any(rec.getMessage() == "prefetch failed" for rec in caplog.records), 10)
        assert len(cache) == cached
    assert other.log == []


def test_a_batch_of_tasks_is_not_prefetched(random_store, servers):
    """Only a task opening (one task, no context) is worth it: *Retrieve predictions* over many
    tasks would fetch them all for nothing."""
    host = servers("127.0.0.1")
    urls = [host.file(f"/t{i}.png", ellipse_png()) for i in range(2)]
    settings = env_settings(allowed_hosts=(host.netloc,), device="cpu")
    body = {"tasks": [{"id": i, "data": {"image": u}} for i, u in enumerate(urls)], "label_config": CONFIG}
    with TestClient(create_app(settings)) as client:
        assert client.post("/predict", json=body).json()["results"] == [[], []]
        time.sleep(1.0)
    assert host.log == []


def test_in_queue_mode_an_opened_task_is_staged_for_the_workers(random_store, servers, private_redis):
    host = servers("127.0.0.1")
    url = host.file("/task.png", ellipse_png())
    settings = env_settings(allowed_hosts=(host.netloc,), device="cpu", redis_url=private_redis.url)
    conn = redis.Redis.from_url(private_redis.url)
    with TestClient(create_app(settings)) as client:
        assert client.post("/predict", json=opened(url)).json()["results"] == [[]]
        assert poll(lambda: any(conn.scan_iter("dextr:image:*")), 10), "nothing staged in Redis"
        client.post("/predict", json=opened(url))  # opened again: staged already, not fetched again
        time.sleep(0.5)
    assert gets(host, "/task.png") == 1


def test_prefetch_can_be_turned_off(random_store, servers):
    host = servers("127.0.0.1")
    url = host.file("/task.png", ellipse_png())
    settings = env_settings(allowed_hosts=(host.netloc,), device="cpu", prefetch=False)
    with TestClient(create_app(settings)) as client:
        assert client.post("/predict", json=opened(url)).json()["results"] == [[]]
        time.sleep(1.0)
    assert host.log == []
