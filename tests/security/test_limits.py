"""Bounded cost and honest health: what one request may take, and what /health says under stress.

Real ``dextr-backend serve`` processes, real HTTP, hostile hosts from :mod:`hostile`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hostile import Server
from services import Backend, env_settings

from dextr_backend.cli import main
from dextr_backend.errors import InputError
from dextr_backend.labelstudio_api.app import create_app
from dextr_backend.models import build_model
from dextr_backend.weights.store import WeightsStore

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Object"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="Object" smart="true"/></KeyPointLabels>
</View>"""


def keypoints(points, w, h):
    return [
        {
            "original_width": w,
            "original_height": h,
            "from_name": "kp",
            "to_name": "image",
            "type": "keypointlabels",
            "value": {"x": 100 * x / w, "y": 100 * y / h, "keypointlabels": ["Object"]},
        }
        for x, y in points
    ]


def body(url, w, h, objects=1, interactive=True):
    boxes = [
        [
            (20 + i % 10 * 30, 40 + i // 10 * 20),
            (45 + i % 10 * 30, 42 + i // 10 * 20),
            (32 + i % 10 * 30, 30 + i // 10 * 20),
            (33 + i % 10 * 30, 55 + i // 10 * 20),
        ]
        for i in range(objects)
    ]
    clicks = [kp for box in boxes for kp in keypoints(box, w, h)]
    task = {"id": 1, "data": {"image": url}}
    if interactive:
        return {"tasks": [task], "label_config": CONFIG, "params": {"context": {"result": clicks}}}
    task["annotations"] = [{"id": 1, "result": clicks}]
    return {"tasks": [task], "label_config": CONFIG, "params": {"context": None}}


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (``VmRSS``) or at its peak so far (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


@pytest.fixture()
def host():
    server = Server("127.0.0.1")
    yield server
    server.stop()


def env(tmp_path, host, **extra):
    return {
        "DEXTR_WEIGHTS_DIR": str(tmp_path / "store"),
        "DEXTR_DEVICE": "cpu",
        "DEXTR_THREADS": "1",
        "DEXTR_ALLOWED_HOSTS": host.netloc,
        "LOG_LEVEL": "WARNING",
        **{k: str(v) for k, v in extra.items()},
    }


@pytest.mark.slow
def test_health_answers_while_slow_hosts_hold_every_prediction(tmp_path, host):
    """45 requests whose picture trickles in one byte a second: predictions are bounded by their
    deadline, and /health answers at once from its own threads all the while."""
    url = host.trickle("/slow.png", total=120, every=1.0)
    server = Backend(
        env(tmp_path, host, DEXTR_FETCH_TIMEOUT=8, DEXTR_PREDICT_TIMEOUT=12, DEXTR_FETCH_MIN_RATE_KB=0)
    ).start()  # held for their whole deadline
    try:
        statuses: list[int] = []

        def one():
            started = time.monotonic()
            r = httpx.post(server.url + "/predict", json=body(url, 160, 120), timeout=60)
            statuses.append((r.status_code, time.monotonic() - started))

        threads = [threading.Thread(target=one) for _ in range(45)]
        for t in threads:
            t.start()
        time.sleep(2)
        health = httpx.get(server.url + "/health", timeout=30)
        in_flight = sum(t.is_alive() for t in threads)
        assert health.status_code == 200 and health.json()["status"] == "UP"
        assert in_flight >= 40, "the predictions ended before /health was asked: the test proves nothing"
        for t in threads:
            t.join(60)
        assert len(statuses) == 45
        assert {s for s, _ in statuses} <= {422, 504}, statuses
        assert max(took for _, took in statuses) < 30
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["torch", "auto"])
def hundred_objects(request, tmp_path_factory):
    """One server, 8 then 100 then 101 objects on a 2000x1500 picture: the answers and the server's
    RSS before and after the 100, and its peak (``VmHWM``), in MB; with pass 1 on torch, then on
    the default engine (a CPU runtime, whose libraries hold about 120-250 MB more)."""
    engine = request.param
    host = Server("127.0.0.1")
    tmp_path = tmp_path_factory.mktemp("hundred")
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8)
    url = host.file("/big.jpg", cv2.imencode(".jpg", big)[1].tobytes(), "image/jpeg")
    server = Backend(env(tmp_path, host, DEXTR_PREDICT_TIMEOUT=300, DEXTR_MAX_OBJECTS=100, DEXTR_ENGINE=engine)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=300) as http:
            answers = [http.post("/predict", json=body(url, 2000, 1500, objects=8, interactive=False))]
            before = rss_mb(server.proc.pid)
            answers.append(http.post("/predict", json=body(url, 2000, 1500, objects=100, interactive=False)))
            after, peak = rss_mb(server.proc.pid), rss_mb(server.proc.pid, "VmHWM")
            answers.append(http.post("/predict", json=body(url, 2000, 1500, objects=101, interactive=False)))
    finally:
        server.stop()
        host.stop()
    print(
        f"\n100 objects on a 2000x1500 picture (in-process, engine {engine}): "
        f"RSS {before:.0f} -> {after:.0f} MB, peak {peak:.0f} MB"
    )
    return engine, answers, before, after, peak


@pytest.mark.slow
def test_objects_are_limited_and_memory_stays_flat_with_their_number(hundred_objects):
    _, (eight, hundred, too_many), before, after, _ = hundred_objects
    assert eight.status_code == 200 and len(eight.json()["results"][0]["result"]) == 8
    assert hundred.status_code == 200 and len(hundred.json()["results"][0]["result"]) == 100
    # one full-picture probability map is 12 MB: 100 held at once would be 1.2 GB
    assert after - before < 250, f"RSS grew {after - before:.0f} MB from 8 to 100 objects"
    assert too_many.status_code == 422 and "DEXTR_MAX_OBJECTS" in too_many.json()["detail"]


def test_a_hundred_object_request_peaks_below_1_gb(hundred_objects):
    """Below 1 GB with torch; a CPU runtime's libraries add their own fixed share, so there the
    request's own part is bounded: its peak above the server's resident size before it."""
    engine, _, before, _, peak = hundred_objects
    if engine == "torch":
        assert peak < 1024, f"a 100-object request took the server to a {peak:.0f} MB peak"
    else:
        assert peak - before < 150, f"a 100-object request took the server from {before:.0f} to {peak:.0f} MB"


@pytest.mark.parametrize(
    "setting, value, request_of, variable",
    [
        (
            "max_tasks",
            2,
            lambda u: {**body(u, 160, 120), "tasks": [{"id": i, "data": {"image": u}} for i in range(3)]},
            "DEXTR_MAX_TASKS",
        ),
        (
            "max_points",
            6,
            lambda u: {
                **body(u, 160, 120),
                "params": {"context": {"result": keypoints([(10 + i, 20) for i in range(7)], 160, 120)}},
            },
            "DEXTR_MAX_POINTS",
        ),
        ("max_body_mb", 1, lambda u: {**body(u, 160, 120), "padding": "x" * (1024 * 1024 + 1)}, "DEXTR_MAX_BODY_MB"),
    ],
)
def test_each_limit_is_a_4xx_naming_its_variable(tmp_path, monkeypatch, setting, value, request_of, variable):
    monkeypatch.setenv("DEXTR_WEIGHTS_DIR", str(tmp_path / "store"))
    app = create_app(env_settings(device="cpu", allowed_hosts=("127.0.0.1",), **{setting: value}))
    with TestClient(app) as client:
        r = client.post("/predict", json=request_of("http://127.0.0.1:1/x.png"))
    assert r.status_code in (413, 422) and variable in r.json()["detail"]


def test_a_corrupt_current_weights_file_is_down_not_up(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    root = tmp_path / "store"
    monkeypatch.setenv("DEXTR_WEIGHTS_DIR", str(root))
    store = WeightsStore(root)
    good = store.add_version(build_model("lite0").state_dict(), "lite0", name="good", make_current=True)
    bad = store.add_version(build_model("lite0").state_dict(), "lite0", name="bad")
    with TestClient(create_app(env_settings(device="cpu"))) as client:
        assert client.get("/health").json()["status"] == "UP"
        data = good.path.read_bytes()
        good.path.write_bytes(data[: len(data) // 2])  # truncated under the running server
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "DOWN"
        assert "truncated or corrupt" in health.json()["reason"]
    bad.path.write_bytes(b"\x00" * (bad.size or 10))  # same size, other bytes
    assert main(["weights", "use", "bad"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert WeightsStore(root).current_name() == "good"  # not switched


def test_405_says_which_methods_are_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("DEXTR_WEIGHTS_DIR", str(tmp_path / "store"))
    with TestClient(create_app(env_settings(device="cpu"))) as client:
        r = client.get("/predict")
        assert r.status_code == 405 and r.headers["Allow"] == "POST"
        r = client.delete("/health")
        assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) >= {"GET"}


def test_the_image_size_limit_follows_the_settings_given(tmp_path, monkeypatch, host):
    """Issue 29: ``DEXTR_MAX_IMAGE_PIXELS`` was read once, when ``imageio`` was imported; the
    ``Settings`` a server was given, and the environment as it is later, went unheard."""
    from dextr_backend.imageio import decode_image

    picture = cv2.imencode(".png", np.zeros((120, 160, 3), np.uint8))[1].tobytes()
    monkeypatch.setenv("DEXTR_WEIGHTS_DIR", str(tmp_path / "store"))
    for limit, status in ((160 * 120, 200), (160 * 120 - 1, 422)):
        url = host.file(f"/small-{limit}.png", picture, "image/png")  # not in the process's image cache
        app = create_app(env_settings(device="cpu", allowed_hosts=(host.netloc,), max_image_pixels=limit))
        with TestClient(app) as client:
            r = client.post("/predict", json=body(url, 160, 120))
        assert r.status_code == status, r.text[:300]
    assert "exceeds 19199 pixels (DEXTR_MAX_IMAGE_PIXELS)" in r.json()["detail"]
    monkeypatch.setenv("DEXTR_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(InputError, match="exceeds 1000 pixels"):
        decode_image(picture)
