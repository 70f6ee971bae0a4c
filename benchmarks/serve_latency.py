"""Latency of interactive /predict: in-process versus through the Redis queue, and throughput.

Starts everything it measures as real processes on this machine: a private redis-server, the
backend (`dextr-backend serve`) once without and once with REDIS_URL, and `dextr-backend
worker` processes. Every request is a real Label Studio interactive body with 4 clicks on the
same picture (so the image cache is warm after the first), sent over loopback HTTP.

Corrective clicks: the current version answers 4 clicks, and 4 clicks plus one positive and one
negative correction, in-process, with each corrector of ``--correctors`` (``auto``: the version's
own; ``fbrs``: f-BRS-B, which iterates, at most 20 head evaluations per request).

Every process runs pass 1 on ``DEXTR_ENGINE`` as set (default ``auto``: the fastest runtime
installed); ``--engines`` also times in-process /predict on each engine named, one after another.

    python benchmarks/serve_latency.py                  # 50 requests each, 2-worker throughput for 20 s
    python benchmarks/serve_latency.py --engines torch,auto --correctors auto --seconds 5
    python benchmarks/serve_latency.py --requests 200 --json
"""

from __future__ import annotations

import argparse
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
from services import Backend, RedisServer, Worker, serve_folder  # noqa: E402  (the tests' real-process helpers)

CONFIG = """<View><Image name="image" value="$image"/>
<BrushLabels name="tag" toName="image"><Label value="Object"/></BrushLabels>
<KeyPointLabels name="kp" toName="image" smart="true"><Label value="Object" smart="true"/></KeyPointLabels></View>"""


def request_body(host: str, w: int, h: int, points, negatives=()) -> bytes:
    result = [
        {
            "original_width": w,
            "original_height": h,
            "from_name": "kp",
            "to_name": "image",
            "type": "keypointlabels",
            "is_positive": positive,
            "value": {"x": 100 * x / w, "y": 100 * y / h, "keypointlabels": ["Object"]},
        }
        for (x, y), positive in [(p, True) for p in points] + [(n, False) for n in negatives]
    ]
    return json.dumps(
        {
            "tasks": [{"id": 1, "data": {"image": f"http://{host}/picture.png"}}],
            "project": "1.1",
            "label_config": CONFIG,
            "params": {"context": {"result": result}},
        }
    ).encode()


def post(url: str, body: bytes) -> float:
    req = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        if r.status != 200:
            raise RuntimeError(f"/predict answered {r.status}")
    return (time.perf_counter() - t) * 1000


def latency(url: str, body: bytes, n: int) -> dict:
    for _ in range(3):
        post(url, body)  # warm: model loaded, image cached
    ms = sorted(post(url, body) for _ in range(n))
    return {"p50": statistics.median(ms), "p95": ms[min(len(ms) - 1, int(0.95 * len(ms)))], "n": n}


def throughput(url: str, body: bytes, clients: int, seconds: float) -> float:
    done = []
    stop = time.monotonic() + seconds

    def loop():
        while time.monotonic() < stop:
            post(url, body)
            done.append(1)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(done) / (time.monotonic() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--requests", type=int, default=50, help="timed sequential requests per mode")
    p.add_argument("--seconds", type=float, default=20.0, help="duration of the throughput run")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients in the throughput run")
    p.add_argument("--threads", type=int, default=1, help="torch and engine threads per process (DEXTR_THREADS)")
    p.add_argument(
        "--correctors",
        default="auto,fbrs",
        help="comma-separated DEXTR_CORRECTOR values whose corrected requests are timed",
    )
    p.add_argument(
        "--engines",
        default="",
        help="comma-separated DEXTR_ENGINE values whose in-process /predict is also timed (e.g. torch,auto)",
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON line last")
    args = p.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]

    tmp = Path(tempfile.mkdtemp(prefix="dextr-serve-bench-"))
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 90, (480, 640, 3)).astype(np.uint8)
    cv2.ellipse(picture, (320, 240), (180, 120), 15, 0, 360, (40, 60, 220), -1)
    cv2.imwrite(str(tmp / "picture.png"), picture)
    host = serve_folder(tmp)
    body = request_body(host, 640, 480, [[140, 240], [500, 240], [320, 110], [320, 370]])
    env = {
        "DEXTR_ALLOWED_HOSTS": host,
        "DEXTR_DEVICE": "cpu",
        "OMP_NUM_THREADS": str(args.threads),
        "DEXTR_THREADS": str(args.threads),  # what `serve` sets torch and the engine to
        "LOG_LEVEL": "WARNING",
    }
    redis_server = RedisServer(tmp / "redis")
    redis_server.start()
    out = {}
    procs = []
    try:
        local = Backend(env, log=tmp / "inprocess.log").start()
        procs.append(local)
        out["in_process"] = latency(local.url, body, args.requests)
        local.stop()
        for engine in engines:
            backend = Backend({**env, "DEXTR_ENGINE": engine}, log=tmp / f"engine-{engine}.log").start()
            procs.append(backend)
            out[f"in_process_{engine}"] = latency(backend.url, body, args.requests)
            backend.stop()
        queued_env = {**env, "REDIS_URL": redis_server.url}
        w1 = Worker(redis_server.url, queued_env, log=tmp / "worker1.log").start()
        procs.append(w1)
        api = Backend(queued_env, log=tmp / "queue.log").start()
        procs.append(api)
        out["queue_1_worker"] = latency(api.url, body, args.requests)
        out["throughput_1_worker"] = throughput(api.url, body, args.clients, args.seconds)
        w2 = Worker(redis_server.url, queued_env, log=tmp / "worker2.log").start()
        procs.append(w2)
        out["throughput_2_workers"] = throughput(api.url, body, args.clients, args.seconds)
        for proc in procs:
            proc.stop()
        corrected = request_body(
            host, 640, 480, [[140, 240], [500, 240], [320, 110], [320, 370], [400, 200]], negatives=[[250, 300]]
        )
        for name in args.correctors.split(","):
            backend = Backend({**env, "DEXTR_CORRECTOR": name}, log=tmp / f"corrector-{name}.log").start()
            procs.append(backend)
            out[f"{name}_4_clicks"] = latency(backend.url, body, args.requests)
            out[f"{name}_4_plus_2_corrections"] = latency(backend.url, corrected, args.requests)
            backend.stop()
    finally:
        for proc in procs:
            proc.stop()
        redis_server.stop()

    overhead = out["queue_1_worker"]["p50"] - out["in_process"]["p50"]
    print(f"{'mode':<22}{'p50 ms':>9}{'p95 ms':>9}")
    for mode in ("in_process", *(f"in_process_{e}" for e in engines), "queue_1_worker"):
        print(f"{mode:<22}{out[mode]['p50']:>9.1f}{out[mode]['p95']:>9.1f}")
    print(f"queue overhead (p50)  {overhead:+.1f} ms")
    print(
        f"throughput, {args.clients} clients: 1 worker {out['throughput_1_worker']:.1f} req/s, "
        f"2 workers {out['throughput_2_workers']:.1f} req/s"
    )
    ratios = {}
    for name in args.correctors.split(","):
        ratios[name] = out[f"{name}_4_plus_2_corrections"]["p50"] / out[f"{name}_4_clicks"]["p50"]
        for mode in (f"{name}_4_clicks", f"{name}_4_plus_2_corrections"):
            print(f"{mode:<34}{out[mode]['p50']:>9.1f}{out[mode]['p95']:>9.1f}")
        print(f"corrections cost with {name} (p50)  x{ratios[name]:.2f} the 4-click request")
    if args.json:
        print(
            json.dumps(
                {
                    **out,
                    "queue_overhead_p50_ms": overhead,
                    "corrections_ratio_p50": {k: round(v, 3) for k, v in ratios.items()},
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
