"""A corpus of hostile and broken requests against the real backend, in both modes.

Every case must get a 4xx (or a deliberate 503/504), never a 500 or a traceback, within 30 s; no
response may carry a secret; and the memory of the process that did the work (the server
in-process, the worker in queue mode) after the corpus stays within 200 MB of its value after
the first request (issue 26; the figures are printed and quoted in README's Security section).
The backend runs as a real ``dextr-backend serve`` process, in-process and with a real Redis
and a real worker, with the shipped default model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from hostile import GarbageServer, Server
from services import served_in_mode

TOKEN = "corpus-secret-token-0123456789"
REDIS_PASSWORD_MARK = "hunter2"
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Object"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="Object" smart="true"/></KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true"><Label value="Object"/></RectangleLabels>
</View>"""
W, H = 160, 120


# --------------------------------------------------------------------------- a hostile image host
def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def image_host():
    """Pictures good and bad: valid, corrupt, empty, a decompression bomb, oversized, slow, looping,
    and redirects to places no fetch may go."""
    img = np.full((H, W, 3), 30, np.uint8)
    cv2.ellipse(img, (80, 60), (50, 40), 0, 0, 360, (40, 40, 230), -1)
    rng = np.random.default_rng(0)
    host, internal = Server("127.0.0.1"), GarbageServer("127.0.0.1")
    host.file("/ok.png", _png(img))
    host.file("/corrupt.png", b"\x89PNG\r\n\x1a\n not really a picture")
    host.file("/empty.png", b"")
    host.file("/bomb.png", _png(np.zeros((10000, 9000), np.uint8)))
    host.file("/oversized.png", _png(rng.integers(0, 255, (800, 800, 3), dtype=np.uint8)))  # ~1.9 MB
    host.file("/text.png", b"hello, I am text", "text/plain")
    host.trickle("/trickle.png", total=60, every=0.5)
    host.redirect("/loop.png", "/loop.png")
    host.redirect("/to-internal.png", internal.url + "/")
    host.redirect("/to-file.png", "file:///etc/passwd")
    host.redirect("/to-ftp.png", "ftp://127.0.0.1/x.png")
    host.redirect("/to-crlf.png", "/ok.png%0d%0aX-Injected: 1")
    host.routes["/error.png"] = (500, {}, b"")
    yield host.netloc
    host.stop()
    internal.stop()


# --------------------------------------------------------------------------- the corpus
def kp(x, y, **over):
    item = {
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "from_name": "kp",
        "to_name": "image",
        "type": "keypointlabels",
        "is_positive": True,
        "value": {"x": 100 * x / W, "y": 100 * y / H, "width": 0.5, "keypointlabels": ["Object"]},
    }
    item.update(over)
    return item


CLICKS = [kp(30, 60), kp(130, 62), kp(80, 20), kp(82, 100)]


def with_field(body: dict, key: str, value) -> dict:
    """``body`` with ``key`` set to ``value``, or without ``key`` when ``value`` is None."""
    if value is None:
        body.pop(key, None)
    else:
        body[key] = value
    return body


def predict_body(host, *, result=CLICKS, image="/ok.png", task=None, **extra):
    task = task if task is not None else {"id": 1, "data": {"image": f"http://{host}{image}"}}
    body = {
        "tasks": [task],
        "project": "3.1700000000",
        "label_config": CONFIG,
        "params": {"context": {"result": result} if result is not None else None},
    }
    body.update(extra)
    return body


def _enc(obj) -> bytes:
    return obj if isinstance(obj, bytes) else json.dumps(obj).encode()


def corpus(host: str) -> list[tuple[str, str, str, bytes]]:
    """``(name, method, path, raw body)`` cases; every one is wrong in some way."""
    cases: list[tuple[str, str, str, bytes]] = []

    def add(name, body, path="/predict", method="POST"):
        cases.append((name, method, path, _enc(body)))

    # 1. not JSON, or JSON of the wrong shape, on every POST route
    broken = {
        "empty": b"",
        "brace": b"{",
        "null": b"null",
        "list": b"[]",
        "number": b"1",
        "string": b'"tasks"',
        "bad-utf8": b'{"tasks": "\xff\xfe"}',
        "trailing-garbage": b'{"tasks": []} trailing',
        "deep-list": b"[" * 100_000 + b"]" * 100_000,
        "deep-dict": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "deep-but-parseable": b"[" * 500 + b"]" * 500,
        "huge-int": b'{"tasks": ' + b"1" * 400 + b"}",
        "huge-float": b'{"tasks": 1e999}',
        "nan-literal": b'{"tasks": NaN}',
        "bom": b"\xef\xbb\xbf{}",
        "single-quotes": b"{'tasks': []}",
        "unterminated-string": b'{"tasks": "',
        "control-chars": b'{"a": "\x00"}',
    }
    for route in ("/predict", "/setup", "/webhook"):
        for name, raw in broken.items():
            add(f"{route} {name}", raw, route)

    # 2. /predict: the request's own fields
    ok_task = {"id": 1, "data": {"image": f"http://{host}/ok.png"}}
    for name, tasks in {
        "missing": None,
        "object": {},
        "empty": [],
        "string": "x",
        "number": 5,
        "list-of-int": [1],
        "list-of-null": [None],
        "list-of-list": [[]],
        "too-many": [ok_task] * 101,
    }.items():
        add(f"tasks {name}", with_field(predict_body(host), "tasks", tasks))
    for name, cfg in {
        "missing": None,
        "empty": "",
        "number": 5,
        "list": ["<View/>"],
        "not-xml": "<View",
        "no-image": "<View><Text name='t' value='$t'/></View>",
        "no-outputs": "<View><Image name='image' value='$image'/></View>",
        "billion-laughs": '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
        + "]><View><Image name='image' value='$image'/>&i;</View>",
        "external-entity": '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<View><Image name='image' value='$image'/>&x;</View>",
    }.items():
        add(f"label_config {name}", with_field(predict_body(host), "label_config", cfg))
    for name, params in {
        "string": "x",
        "list": [],
        "number": 3,
        "context-string": {"context": "x"},
        "context-list": {"context": []},
        "result-string": {"context": {"result": "x"}},
        "result-number": {"context": {"result": 5}},
        "result-items-null": {"context": {"result": [None, None, None, None]}},
        "result-items-int": {"context": {"result": [1, 2, 3, 4]}},
    }.items():
        body = predict_body(host)
        body["params"] = params
        add(f"params {name}", body)

    # 3. task data and image URLs
    for name, data in {
        "string": "http://x/y.png",
        "number": 5,
        "list": [],
        "null": None,
        "no-image-key": {},
        "image-int": {"image": 5},
        "image-list": {"image": ["a"]},
        "image-empty": {"image": ""},
        "image-dict": {"image": {"url": "x"}},
    }.items():
        add(f"task data {name}", predict_body(host, task={"id": 1, "data": data}))
    for name, task in {
        "id-dict": {"id": {"x": 1}, "data": 5},
        "id-huge": {"id": 10**400, "data": 5},
        "id-list": {"id": [1], "data": {}},
    }.items():
        add(f"task {name}", predict_body(host, task=task))
    urls = {
        "file": "file:///etc/passwd",
        "ftp": "ftp://127.0.0.1/x.png",
        "gopher": "gopher://127.0.0.1:70/_x",
        "javascript": "javascript:alert(1)",
        "data-url": "data:image/png;base64,iVBORw0KGgo=",
        "relative-without-ls": "/data/upload/1/x.png",
        "not-allowed-host": "http://10.1.2.3/x.png",
        "loopback-port": "http://127.0.0.1:6379/",
        "localhost": "http://localhost:1/x.png",
        "ipv6-loopback": "http://[::1]:1/x.png",
        "userinfo": f"http://user:pw@{host}/ok.png",
        "crlf": f"http://{host}/ok.png\r\nX-Injected: 1",
        "lf": f"http://{host}/ok\n.png",
        "space": f"http://{host}/o k.png",
        "tab": f"http://{host}/ok\t.png",
        "nul": f"http://{host}/ok\x00.png",
        "unicode-host": "http://exämple.invalid/x.png",
        "long-url": f"http://{host}/" + "a" * 20_000,
        "no-host": "http:///x.png",
        "bad-port": f"http://{host.split(':')[0]}:99999/x.png",
        "port-text": "http://127.0.0.1:abc/x.png",
        "scheme-only": "http:",
        "s3": "s3://bucket/x.png",
        "missing": f"http://{host}/missing.png",
        "server-error": f"http://{host}/error.png",
        "corrupt": f"http://{host}/corrupt.png",
        "empty-file": f"http://{host}/empty.png",
        "text-file": f"http://{host}/text.png",
        "bomb": f"http://{host}/bomb.png",
        "oversized": f"http://{host}/oversized.png",
        "trickle": f"http://{host}/trickle.png",
        "redirect-loop": f"http://{host}/loop.png",
        "redirect-internal": f"http://{host}/to-internal.png",
        "redirect-file": f"http://{host}/to-file.png",
        "redirect-ftp": f"http://{host}/to-ftp.png",
        "redirect-crlf": f"http://{host}/to-crlf.png",
    }
    stored = [{"id": 1, "result": [{k: v for k, v in c.items() if k != "is_positive"} for c in CLICKS]}]
    for name, url in urls.items():
        add(f"image url {name}", predict_body(host, task={"id": 1, "data": {"image": url}}))
        add(
            f"batch image url {name}",
            predict_body(host, result=None, task={"id": 1, "data": {"image": url}, "annotations": stored}),
        )

    # 4. the clicks (interactive context)
    def with_value(**value):
        item = kp(30, 60)
        item["value"] = {**item["value"], **value}
        return [item] + CLICKS[1:]

    bad_coordinates = {
        "string": "10",
        "null": None,
        "bool": True,
        "list": [1],
        "negative": -5,
        "over": 100.5,
        "huge": 10**400,
        "inf": float("inf"),
        "ninf": float("-inf"),
        "dict": {"a": 1},
        "tiny-negative": -1e-9,
    }
    for axis in ("x", "y"):
        for name, value in bad_coordinates.items():
            add(f"click {axis}-{name}", predict_body(host, result=with_value(**{axis: value})))
    for name, value in {
        "labels-dict": {"keypointlabels": {"a": 1}},
        "labels-int": {"keypointlabels": 5},
        "labels-list-of-int": {"keypointlabels": [5]},
    }.items():
        add(f"click {name}", predict_body(host, result=with_value(**value)))
    missing_xy = kp(30, 60)
    missing_xy["value"] = {"keypointlabels": ["Object"]}
    add("click value without x and y", predict_body(host, result=[missing_xy] + CLICKS[1:]))
    for name, over in {
        "value-null": {"value": None},
        "value-list": {"value": [1, 2]},
        "value-string": {"value": "x"},
    }.items():
        add(f"click {name}", predict_body(host, result=[kp(30, 60, **over)] + CLICKS[1:]))
    sizes = {
        "zero": 0,
        "negative": -1,
        "huge": 10**400,
        "inf": float("inf"),
        "ninf": float("-inf"),
        "string": "abc",
        "null": None,
        "fraction": 1.5,
        "list": [160],
        "bool": True,
        "over-limit": 100_001,
    }
    for name, size in sizes.items():
        add(f"original_width {name}", predict_body(host, result=[kp(30, 60, original_width=size)] + CLICKS[1:]))
        add(f"original_height {name}", predict_body(host, result=[kp(30, 60, original_height=size)] + CLICKS[1:]))
    missing_size = kp(30, 60)
    missing_size.pop("original_width")
    add("click without original_width", predict_body(host, result=[missing_size] + CLICKS[1:]))
    for name, type_ in {"list": ["keypointlabels"], "dict": {"a": 1}, "number": 5}.items():
        add(f"click type {name}", predict_body(host, result=[kp(30, 60, type=type_)] + CLICKS[1:]))
    add("too many clicks for one object", predict_body(host, result=[kp(30 + i % 100, 60) for i in range(65)]))
    add(
        "points outside (percent over 100)",
        predict_body(
            host,
            result=[kp(30, 60)] * 3 + [{**kp(80, 100), "value": {"x": 50, "y": 250, "keypointlabels": ["Object"]}}],
        ),
    )

    # 5. rectangles
    def rect(**value):
        base = {"x": 20, "y": 15, "width": 60, "height": 70, "rotation": 0, "rectanglelabels": ["Object"]}
        base.update(value)
        return [
            {
                "original_width": W,
                "original_height": H,
                "from_name": "box",
                "to_name": "image",
                "type": "rectanglelabels",
                "value": base,
            }
        ]

    for name, value in {
        "rotation-string": {"rotation": "abc"},
        "rotation-list": {"rotation": [1]},
        "rotation-inf": {"rotation": 1e999},
        "rotation-45": {"rotation": 45},
        "width-string": {"width": "60"},
        "width-negative": {"width": -10},
        "width-huge": {"width": 10**400},
        "height-null": {"height": None},
        "height-over": {"height": 500},
        "x-string": {"x": "a"},
    }.items():
        add(f"rectangle {name}", predict_body(host, result=rect(**value)))
    no_size = rect()
    no_size[0]["value"].pop("width")
    add("rectangle without width", predict_body(host, result=no_size))
    for name, size in sizes.items():
        for field in ("original_width", "original_height"):
            item = rect()
            item[0][field] = size
            add(f"rectangle {field} {name}", predict_body(host, result=item))

    # 6. batch mode: what is stored on a task
    stored_clicks = [{k: v for k, v in c.items() if k != "is_positive"} for c in CLICKS]
    for name, anns in {
        "number": 5,
        "string": "x",
        "dict": {"result": []},
        "list-of-int": [5],
        "result-number": [{"result": 5}],
        "result-string": [{"result": "x"}],
        "result-items-int": [{"result": [1, 2]}],
        "mixed-dates": [
            {"id": 1, "updated_at": 5, "result": stored_clicks},
            {"id": 2, "updated_at": "2026-01-01", "result": stored_clicks},
        ],
        "mixed-ids": [{"id": "a", "result": stored_clicks}, {"id": 2, "result": stored_clicks}],
        "too-many-objects": [{"result": stored_clicks * 101}],
        "clicks-huge-size": [{"result": [{**c, "original_width": 10**400} for c in stored_clicks]}],
    }.items():
        for key in ("annotations", "predictions"):
            task = {"id": 1, "data": {"image": f"http://{host}/ok.png"}, key: anns}
            add(f"batch {key} {name}", predict_body(host, result=None, task=task))

    # 7. /setup
    for name, body in {
        "not-object": [1],
        "hostname-ftp": {"project": "1.1", "hostname": "ftp://x"},
        "hostname-number": {"project": "1.1", "hostname": 5},
        "hostname-crlf": {"project": "1.1", "hostname": "http://a\r\nb"},
        "hostname-userinfo": {"project": "1.1", "hostname": "http://u:p@ls:8080"},
        "hostname-no-host": {"project": "1.1", "hostname": "http://"},
        "hostname-list": {"project": "1.1", "hostname": ["http://ls"]},
        "hostname-javascript": {"project": "1.1", "hostname": "javascript:alert(1)"},
        "hostname-file": {"project": "1.1", "hostname": "file:///etc"},
        "hostname-bad-port": {"project": "1.1", "hostname": "http://ls:99999"},
        "hostname-open-bracket": {"project": "1.1", "hostname": "http://[::1"},
        "hostname-space": {"project": "1.1", "hostname": "http://l s:8080"},
        "hostname-dict": {"project": "1.1", "hostname": {"url": "http://ls"}},
        "hostname-true": {"project": "1.1", "hostname": True},
        "hostname-no-scheme": {"project": "1.1", "hostname": "ls:8080"},
    }.items():
        add(f"setup {name}", body, "/setup")

    # 8. /webhook
    for name, body in {
        "no-action": {},
        "action-number": {"action": 5},
        "action-list": {"action": ["START_TRAINING"]},
        "train-no-project": {"action": "START_TRAINING"},
        "train-project-huge": {"action": "START_TRAINING", "project": {"id": 10**30}},
        "train-project-negative": {"action": "START_TRAINING", "project": {"id": -1}},
        "train-project-string": {"action": "START_TRAINING", "project": {"id": "abc"}},
        "train-project-list": {"action": "START_TRAINING", "project": [1]},
        "train-project-float": {"action": "START_TRAINING", "project": 1e999},
        "annotation-garbage": {"action": "ANNOTATION_CREATED", "project": "x", "annotation": 5},
        "not-object": [1, 2],
    }.items():
        add(f"webhook {name}", body, "/webhook")

    # 9. methods and routes
    for method, path in (
        ("GET", "/predict"),
        ("PUT", "/setup"),
        ("DELETE", "/health"),
        ("PATCH", "/webhook"),
        ("GET", "/nope"),
        ("POST", "/health/../predict"),
        ("GET", "/" + "a" * 5000),
        ("POST", "/versions"),
        ("POST", "/train/status"),
        ("POST", "/metrics"),
    ):
        cases.append((f"{method} {path[:40]}", method, path, b"{}"))

    # 10. size
    add("body over DEXTR_MAX_BODY_MB", b'{"tasks": "' + b"a" * (2 * 1024 * 1024) + b'"}')
    return cases


def test_the_corpus_is_large_enough(image_host):
    assert len(corpus(image_host)) >= 300


# --------------------------------------------------------------------------- the servers
def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (``VmRSS``) or at its peak so far (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


def _env(tmp_path, image_host, **extra) -> dict:
    return {
        "DEXTR_WEIGHTS_DIR": str(tmp_path / "store"),
        "DEXTR_DEVICE": "cpu",
        "DEXTR_THREADS": "1",
        "DEXTR_ALLOWED_HOSTS": image_host,
        "DEXTR_FETCH_TIMEOUT": "2",
        "DEXTR_PREDICT_TIMEOUT": "10",
        "DEXTR_MAX_IMAGE_MB": "1",
        "DEXTR_MAX_BODY_MB": "1",
        "LABEL_STUDIO_API_KEY": TOKEN,
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@pytest.fixture(params=["in-process", "queue"])
def backend(request, tmp_path, image_host):
    redis_url = request.getfixturevalue("redis_server").url if request.param == "queue" else None
    yield from served_in_mode(request.param, _env(tmp_path, image_host), tmp_path, redis_url)


@pytest.mark.slow
def test_every_bad_request_gets_a_clear_4xx_never_a_500(backend, image_host):
    mode, server, worker = backend
    busy = worker.proc.pid if worker else server.proc.pid  # the process that loads images and computes
    with httpx.Client(base_url=server.url, timeout=35) as http:
        assert http.post("/predict", json=predict_body(image_host)).status_code == 200
        rss_before, api_before = _rss_mb(busy), _rss_mb(server.proc.pid)
        failures = []
        for name, method, path, raw in corpus(image_host):
            started = time.monotonic()
            try:
                r = http.request(method, path, content=raw, headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                failures.append(f"{name}: no answer ({type(exc).__name__})")
                continue
            took = time.monotonic() - started
            text = r.text
            if not (400 <= r.status_code < 500 or r.status_code in (503, 504)):
                failures.append(f"{name}: HTTP {r.status_code} {text[:200]}")
            if took > 30:
                failures.append(f"{name}: took {took:.1f} s")
            if "Traceback" in text or TOKEN in text:
                failures.append(f"{name}: leaks a traceback or the token: {text[:200]}")
            if r.status_code >= 400 and "detail" not in r.json():
                failures.append(f"{name}: no 'detail' in {text[:200]}")
        assert not failures, f"{mode}: " + "\n".join(failures)
        # still serving, and memory did not grow with the corpus
        assert http.post("/predict", json=predict_body(image_host)).status_code == 200
        assert http.get("/health").status_code == 200
        rss_after, peak = _rss_mb(busy), _rss_mb(busy, "VmHWM")
        print(
            f"\n{mode}: RSS after the first request {rss_before:.0f} MB, after {len(corpus(image_host))} bad "
            f"requests {rss_after:.0f} MB (+{rss_after - rss_before:.0f} MB), peak {peak:.0f} MB"
        )
        if worker:
            print(f"queue: the API server's RSS {api_before:.0f} -> {_rss_mb(server.proc.pid):.0f} MB")
        assert rss_after - rss_before < 200, f"{mode}: RSS grew by {rss_after - rss_before:.0f} MB over the corpus"
