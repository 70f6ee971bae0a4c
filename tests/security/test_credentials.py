"""Where the backend's credentials may go, through the real server: only to the configured Label
Studio origin, never to a host a request names; and no secret in a response, a log or a job.

Hostile hosts are HTTP servers on other loopback addresses (127.0.0.2, 127.0.0.3 are different
hosts for the allow-list) that log every request line and header they receive.
"""

from __future__ import annotations

import base64
import json
import time

import cv2
import httpx
import numpy as np
import pytest
import redis
from hostile import Server
from services import Backend, RedisServer, Worker

TOKEN = "server-own-token-0123456789abcdef"
SETUP_TOKEN = "token-label-studio-sent-in-setup"
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Object"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="Object" smart="true"/></KeyPointLabels>
</View>"""
W, H = 160, 120


IMAGE = "/data/upload/3/ok.png"


def _picture() -> bytes:
    img = np.full((H, W, 3), 30, np.uint8)
    cv2.ellipse(img, (80, 60), (50, 40), 0, 0, 360, (40, 40, 230), -1)
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.fixture()
def hosts():
    """``make(address, pat_refresh=False)``: a logging host serving the task picture at IMAGE,
    and (``pat_refresh``) answering Label Studio's token refresh, to see whether anyone asks."""
    made = []

    def make(address, pat_refresh=False):
        host = Server(address)
        host.file(IMAGE, _picture())
        if pat_refresh:
            host.json("/api/token/refresh/", {"access": "access-jwt-from-" + address})
        made.append(host)
        return host

    yield make
    for h in made:
        h.stop()


def authorizations(host) -> list[str]:
    return [r["authorization"] for r in host.log if r["authorization"]]


def carried(host, secret: str) -> bool:
    """Whether any request ``host`` received held ``secret`` anywhere."""
    return any(secret in r["line"] + r["headers"] + r["body"].decode("latin-1") for r in host.log)


def kp(x, y):
    return {
        "original_width": W,
        "original_height": H,
        "from_name": "kp",
        "to_name": "image",
        "type": "keypointlabels",
        "value": {"x": 100 * x / W, "y": 100 * y / H, "keypointlabels": ["Object"]},
    }


def predict(server, image=IMAGE, **extra) -> httpx.Response:
    body = {
        "tasks": [{"id": 1, "data": {"image": image}}],
        "project": "3.1700000000",
        "label_config": CONFIG,
        "params": {"context": {"result": [kp(30, 60), kp(130, 62), kp(80, 20), kp(82, 100)]}},
        **extra,
    }
    return httpx.post(server.url + "/predict", json=body, timeout=30)


def pat(subject: str = "user") -> str:
    """A personal access token: a JWT-shaped refresh token."""
    part = base64.urlsafe_b64encode(json.dumps({"sub": subject, "token_type": "refresh"}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJIUzI1NiJ9.{part}.signature{subject}"


def _env(tmp_path, **extra):
    return {
        "DEXTR_WEIGHTS_DIR": str(tmp_path / "store"),
        "DEXTR_DEVICE": "cpu",
        "DEXTR_THREADS": "1",
        "DEXTR_FETCH_TIMEOUT": "3",
        "LOG_LEVEL": "INFO",
        **extra,
    }


@pytest.mark.slow
@pytest.mark.parametrize("key", [TOKEN, pat("server")])
def test_a_request_body_never_chooses_where_the_server_key_goes(tmp_path, hosts, key):
    """LABEL_STUDIO_URL unset: the server's key is used nowhere, whatever /predict or /setup say."""
    evil = hosts("127.0.0.2", pat_refresh=True)
    server = Backend(_env(tmp_path, LABEL_STUDIO_API_KEY=key), log=tmp_path / "backend.log").start()
    try:
        r = predict(server, hostname=evil.url, access_token="x")
        assert r.status_code == 422 and "LABEL_STUDIO_URL" in r.json()["detail"]
        # /setup names a host but no token: that host gets no credentials at all
        assert httpx.post(server.url + "/setup", json={"project": "3.17", "hostname": evil.url}).status_code == 200
        r = predict(server)
        assert r.status_code == 200, r.text
        assert evil.log and not evil.leaks((key, key.split(".")[-1]))
        assert not any("token/refresh" in r["line"] for r in evil.log)
    finally:
        server.stop()
    assert key not in (tmp_path / "backend.log").read_text()


def test_setup_hostname_and_token_are_used_together_for_their_project_only(tmp_path, hosts):
    ls = hosts("127.0.0.3")
    server = Backend(_env(tmp_path, LABEL_STUDIO_API_KEY=TOKEN), log=tmp_path / "backend.log").start()
    try:
        httpx.post(server.url + "/setup", json={"project": "3.17", "hostname": ls.url, "access_token": SETUP_TOKEN})
        assert predict(server).status_code == 200
        assert authorizations(ls) == [f"Token {SETUP_TOKEN}"]
        assert not carried(ls, TOKEN)
        other = dict(project="4.17")
        r = predict(server, **other)  # another project never borrows project 3's Label Studio
        assert r.status_code == 422
    finally:
        server.stop()


@pytest.mark.slow
def test_the_configured_label_studio_wins_over_setup(tmp_path, hosts):
    ls, evil = hosts("127.0.0.2"), hosts("127.0.0.4")
    server = Backend(_env(tmp_path, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=TOKEN)).start()
    try:
        httpx.post(server.url + "/setup", json={"project": "3.17", "hostname": evil.url, "access_token": SETUP_TOKEN})
        assert predict(server).status_code == 200
        assert authorizations(ls) == [f"Token {TOKEN}"]
        assert not evil.log
    finally:
        server.stop()


@pytest.mark.slow
def test_setup_state_is_shared_by_every_api_process_through_redis(tmp_path, hosts, redis_server):
    """/setup answered by one server process, /predict by another and a worker: same Label Studio."""
    ls = hosts("127.0.0.3")
    conn = redis.Redis.from_url(redis_server.url)
    conn.delete(*conn.keys("dextr:setup:*")) if conn.keys("dextr:setup:*") else None
    env = _env(tmp_path, REDIS_URL=redis_server.url)
    worker = Worker(redis_server.url, env, log=tmp_path / "worker.log").start()
    first, second = Backend(env).start(), Backend(env).start()
    try:
        r = httpx.post(first.url + "/setup", json={"project": "3.17", "hostname": ls.url, "access_token": SETUP_TOKEN})
        assert r.status_code == 200
        answer = predict(second)
        assert answer.status_code == 200, answer.text
        assert authorizations(ls) == [f"Token {SETUP_TOKEN}"]
        for key in conn.scan_iter("rq:*"):  # queued jobs carry no credentials
            if conn.type(key) == b"hash":
                assert SETUP_TOKEN.encode() not in b"".join(conn.hgetall(key).values())
    finally:
        first.stop()
        second.stop()
        worker.stop()
    assert SETUP_TOKEN not in (tmp_path / "worker.log").read_text()


@pytest.mark.slow
def test_the_redis_password_never_shows(tmp_path):
    server_redis = RedisServer(tmp_path / "redis")
    server_redis.start()
    conn = redis.Redis.from_url(server_redis.url)
    conn.config_set("requirepass", "hunter2")
    url = server_redis.url.replace("redis://", "redis://:hunter2@")
    log = tmp_path / "backend.log"
    server = Backend(_env(tmp_path, REDIS_URL=url), log=log).start()
    try:
        health = httpx.get(server.url + "/health", timeout=10)  # no worker: DOWN, says why
        assert health.status_code == 503 and "hunter2" not in health.text
        server_redis.stop()
        time.sleep(0.5)
        for path in ("/health", "/metrics"):
            r = httpx.get(server.url + path, timeout=15)
            assert "hunter2" not in r.text
        r = predict(server, image="http://127.0.0.1:1/x.png")
        assert r.status_code == 503 and "hunter2" not in r.text and ":***@" in r.text
    finally:
        server.stop()
        server_redis.stop()
    assert "hunter2" not in log.read_text()
