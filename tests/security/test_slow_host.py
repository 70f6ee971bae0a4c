"""Fetching does not hold compute slots (issue 26): a host that trickles bytes delays its own
requests and nobody else's. Image fetches have their own lanes, per host and in all; a body
slower than ``DEXTR_FETCH_MIN_RATE_KB`` is cut off. Real servers on loopback addresses; every
test asserts the order in which things finish, not how long they took."""

from __future__ import annotations

import threading

import cv2
import httpx
import numpy as np
import pytest
import torch
from hostile import Server, png
from services import Backend, Worker, env_settings, poll
from test_labelstudio_backend import CLICKS, CONFIG

from dextr_backend.errors import InputError, ServiceTimeout
from dextr_backend.labelstudio.fetch import FetchError
from dextr_backend.labelstudio.images import ImageFetcher, fetch_rules
from dextr_backend.models import build_model
from dextr_backend.weights.store import WeightsStore


def ellipse_png() -> bytes:
    img = np.full((120, 160, 3), 30, np.uint8)
    cv2.ellipse(img, (80, 60), (50, 40), 0, 0, 360, (40, 40, 230), -1)
    return cv2.imencode(".png", img)[1].tobytes()


def predict(url: str) -> dict:
    return {
        "tasks": [{"id": 1, "data": {"image": url}}],
        "project": "3.17",
        "label_config": CONFIG,
        "params": {"context": {"result": CLICKS}},
    }


def finish_in_order(jobs: dict) -> list[str]:
    """Run ``{name: fn}`` in threads, each started once the one before has begun (``fn`` returns
    when it may); returns the names in the order they finished, with their results."""
    order, lock = [], threading.Lock()

    def run(name, fn):
        value = fn()
        with lock:
            order.append((name, value))

    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return order


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["in-process", "queue"])
def test_a_slow_host_delays_only_its_own_request(tmp_path, mode, request):
    """One prediction slot (DEXTR_MAX_CONCURRENT=1; in queue mode, one worker). A request whose
    picture comes from a host that sends 10 bytes a second is first; a request for a normal picture
    comes while it is fetching. The normal one is answered first: the slow one holds no slot (no
    worker) while it waits on the network."""
    torch.manual_seed(0)
    WeightsStore(tmp_path / "store").add_version(
        build_model("lite0").state_dict(), "lite0", name="s", make_current=True
    )
    slow, fast = Server("127.0.0.2"), Server("127.0.0.1")
    slow_url = slow.trickle("/slow.png", total=1000, every=0.1)
    fast_url = fast.file("/ellipse.png", ellipse_png())
    env = {
        "DEXTR_WEIGHTS_DIR": str(tmp_path / "store"),
        "DEXTR_DEVICE": "cpu",
        "DEXTR_THREADS": "1",
        "LOG_LEVEL": "WARNING",
        "DEXTR_ALLOWED_HOSTS": f"{slow.netloc},{fast.netloc}",
        "DEXTR_MAX_CONCURRENT": "1",
        "DEXTR_FETCH_MIN_RATE_KB": "0",
        "DEXTR_FETCH_TIMEOUT": "15",
        "DEXTR_PREDICT_TIMEOUT": "60",
    }
    worker = None
    if mode == "queue":
        env["REDIS_URL"] = request.getfixturevalue("private_redis").url
        worker = Worker(env["REDIS_URL"], env, log=tmp_path / "worker.log").start()
    server = Backend(env, log=tmp_path / "backend.log").start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            assert http.post("/predict", json=predict(fast_url)).status_code == 200  # model loaded

            def slow_one():
                return http.post("/predict", json=predict(slow_url)).status_code

            def normal_one():
                assert poll(lambda: slow.log, 30), "the slow request never reached its host"
                return http.post("/predict", json=predict(fast_url)).status_code

            order = finish_in_order({"slow": slow_one, "normal": normal_one})
    finally:
        server.stop()
        if worker:
            worker.stop()
        slow.stop()
        fast.stop()
    assert order == [("normal", 200), ("slow", 422)], order


@pytest.fixture()
def rules():
    """This process's fetch lanes and minimum rate, as a test sets them; the environment's after."""
    yield lambda **fields: fetch_rules(env_settings(**fields))
    fetch_rules(env_settings())


@pytest.mark.slow
def test_one_host_holds_at_most_its_lanes(rules, servers):
    """DEXTR_FETCH_PER_HOST=1: a second fetch from the slow host waits for the first one's lane (and
    gives up at its deadline, saying why), while a fetch from another host goes ahead."""
    rules(fetch_per_host=1, fetch_concurrency=8, fetch_min_rate_kb=0)
    slow, fast = servers("127.0.0.2"), servers("127.0.0.3")
    first, second = slow.trickle("/a.png", total=1000, every=0.1), slow.trickle("/b.png", total=1000, every=0.1)
    quick = fast.file("/ok.png", png(9))

    def get(url, timeout):
        def fetch():
            try:
                return ImageFetcher(None, (slow.netloc, fast.netloc), timeout=timeout).get(url).shape
            except (InputError, ServiceTimeout) as exc:
                return str(exc)

        return fetch

    def after_first(fn):
        def wait_then():
            assert poll(lambda: slow.log, 30)
            return fn()

        return wait_then

    order = finish_in_order(
        {"first": get(first, 10.0), "second": after_first(get(second, 4.0)), "other host": after_first(get(quick, 4.0))}
    )
    assert [name for name, _ in order] == ["other host", "second", "first"], order
    results = dict(order)
    assert results["other host"] == (12, 16, 3)
    assert "timed out after 10 s" in results["first"]
    assert "no fetch to 127.0.0.2 came free in time (1 at once per host: DEXTR_FETCH_PER_HOST" in results["second"]
    assert [r["line"] for r in slow.log] == ["GET /a.png HTTP/1.1"]  # the second never connected


def test_a_body_slower_than_the_minimum_rate_is_cut_off(rules, servers):
    rules(fetch_min_rate_kb=16)
    host = servers("127.0.0.2")
    url = host.trickle("/slow.png", total=1000, every=0.1)
    with pytest.raises(FetchError) as err:
        ImageFetcher(None, (host.netloc,), timeout=30.0).get(url)
    assert "slower than 16 kB/s (DEXTR_FETCH_MIN_RATE_KB)" in str(err.value)
    big = host.file("/big.png", png(5, (1500, 2000)))  # a fast one passes
    assert ImageFetcher(None, (host.netloc,), timeout=30.0).get(big).shape == (1500, 2000, 3)
