"""The first click on a freshly opened task against a later one, with and without prefetch.

A real ``dextr-backend serve`` (in-process mode) and a real HTTP image host that answers each
picture after ``--host-delay`` ms, as a remote bucket would. For each task, as Label Studio does:
the task opens (``/predict`` without clicks), the annotator takes ``--think`` seconds over the
extreme points, then the 4th click (the first request that segments), then the same four clicks
again (a later click on a picture already in memory, with no correction to compute). Prefetch
on (``DEXTR_PREFETCH=1``, the default) and off are measured one after the other, each on
``--tasks`` pictures of its own, so neither finds the other's pictures cached.

    python benchmarks/first_click.py                      # 8 tasks, 300 ms host, 1 s to think
    python benchmarks/first_click.py --tasks 20 --host-delay 800 --json
"""

from __future__ import annotations

import argparse
import http.server
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from services import Backend  # noqa: E402  (the tests' real-process helper)

CONFIG = """<View><Image name="image" value="$image"/>
<BrushLabels name="tag" toName="image"><Label value="Object"/></BrushLabels>
<KeyPointLabels name="kp" toName="image" smart="true"><Label value="Object" smart="true"/></KeyPointLabels></View>"""
W, H = 640, 480
POINTS = [(170, 240), (470, 242), (320, 140), (322, 340)]


def slow_host(delay: float, pictures: dict[str, bytes]) -> str:
    """An HTTP server answering ``/<name>.png`` after ``delay`` seconds; returns ``host:port``."""

    class Slow(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            data = pictures.get(self.path.lstrip("/"))
            time.sleep(delay)
            self.send_response(200 if data else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}"


def picture(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    cv2.ellipse(img, (320, 240), (150, 100), 0, 0, 360, tuple(int(v) for v in rng.integers(120, 255, 3)), -1)
    return cv2.imencode(".png", img)[1].tobytes()


def body(url: str, clicks: bool) -> bytes:
    result = [
        {
            "original_width": W,
            "original_height": H,
            "from_name": "kp",
            "to_name": "image",
            "type": "keypointlabels",
            "value": {"x": 100 * x / W, "y": 100 * y / H, "keypointlabels": ["Object"]},
        }
        for x, y in POINTS
    ]
    task = {"tasks": [{"id": 1, "data": {"image": url}}], "project": "1.1", "label_config": CONFIG}
    return json.dumps({**task, "params": {"context": {"result": result}}} if clicks else task).encode()


def post(base: str, data: bytes) -> float:
    """Milliseconds for one /predict, answered with a mask (or none when no clicks were sent)."""
    req = urllib.request.Request(base + "/predict", data=data, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
    return (time.perf_counter() - started) * 1000


def measure(prefetch: bool, names: list[str], host: str, think: float, workdir: Path) -> dict:
    env = {
        "DEXTR_PREFETCH": "1" if prefetch else "0",
        "DEXTR_ALLOWED_HOSTS": host,
        "DEXTR_DEVICE": "cpu",
        "LOG_LEVEL": "WARNING",
    }
    backend = Backend(env, log=workdir / f"backend-prefetch-{int(prefetch)}.log").start(wait=120)
    first, later = [], []
    try:
        post(backend.url, body(f"http://{host}/warm.png", True))  # the model loaded, the engine compiled
        for name in names:
            url = f"http://{host}/{name}"
            post(backend.url, body(url, False))  # the task opens
            time.sleep(think)  # three extreme points clicked meanwhile
            first.append(post(backend.url, body(url, True)))
            later.append(post(backend.url, body(url, True)))
    finally:
        backend.stop()
    return {"first_click_ms": summary(first), "later_click_ms": summary(later)}


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "n": len(ordered),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=8, help="tasks opened per setting (default 8)")
    ap.add_argument("--host-delay", type=float, default=300.0, help="ms the image host waits before answering")
    ap.add_argument("--think", type=float, default=1.0, help="seconds between opening a task and its 4th click")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)
    if args.tasks < 1:
        ap.error("--tasks must be at least 1")
    pictures = {f"{i}.png": picture(i) for i in range(2 * args.tasks)} | {"warm.png": picture(99)}
    host = slow_host(args.host_delay / 1000, pictures)
    workdir = Path(tempfile.mkdtemp(prefix="dextr-first-click-"))
    results = {
        "prefetch off": measure(False, [f"{i}.png" for i in range(args.tasks)], host, args.think, workdir),
        "prefetch on": measure(
            True, [f"{i}.png" for i in range(args.tasks, 2 * args.tasks)], host, args.think, workdir
        ),
    }
    if args.json:
        print(json.dumps({"host_delay_ms": args.host_delay, "think_s": args.think, "results": results}))
        return 0
    print(f"/predict, in-process, image host answering after {args.host_delay:g} ms, {args.think:g} s to think (ms)")
    print(f"{'setting':<13} {'first p50':>10} {'first p95':>10} {'later p50':>10} {'later p95':>10}")
    for name, r in results.items():
        f, la = r["first_click_ms"], r["later_click_ms"]
        print(f"{name:<13} {f['p50']:10.1f} {f['p95']:10.1f} {la['p50']:10.1f} {la['p95']:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
