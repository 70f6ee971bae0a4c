"""What an annotator waits for: from the 4th extreme click on Label Studio's labeling page to the
mask drawn on it, in-process and through the Redis queue.

Everything is real and local: a Label Studio 1.23.2 (the tests' cached install, or ``--label-studio
URL --token T``), the backend of this checkout as ``dextr-backend serve`` (plus a private
redis-server and one ``dextr-backend worker`` in queue mode), and headless Chromium (Debian's
``chromium`` driven by Playwright, as in ``tests/browser``). For each object a fresh task is
opened, Auto-Annotation and Auto-Detect's keypoint tool are picked, three extreme points are
clicked (label re-picked before each, as Label Studio requires), then the 4th:

- ``ui``: the page's own clock (``performance.now()``), from the 4th click's mouse-up to the frame
  after the suggestion appeared in the editor's store (two animation frames: it has been drawn);
- ``ls``: the ``interactive-annotating`` round trip as the browser timed it (Label Studio + backend);
- ``backend``: the backend's own ``/predict`` time for that request (from its ``/metrics``).

The objects are GrabCut pictures (``--data``, default ``../shared/data/GrabCut``), one per task,
reused in turn when ``--objects`` exceeds them. The 4th click is each task's first request with
four points: it pays for fetching and decoding the picture unless the backend fetched it as the
task opened (``DEXTR_PREFETCH``, on by default; ``--no-prefetch`` turns it off to compare). A 5th
click (a positive one inside the object) is timed too, as a later click on a picture already in
memory, so the first click is reported apart from later ones.

    python benchmarks/ui_latency.py                          # 20 objects, in-process and queue
    python benchmarks/ui_latency.py --objects 5 --modes queue --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "browser")]

PROBE = """() => { window.__dextrLatency = new Promise((resolve) => {
  let start = null;
  window.addEventListener('mouseup', () => { start = performance.now(); }, {capture: true});
  const poll = () => {
    const a = window.Htx && window.Htx.annotationStore.selected;
    const shown = a && (a.suggestions.size > 0 || a.regions.some(r => r.type === 'brushregion' && !r.dynamic));
    if (start !== null && shown) {
      requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - start)));
    } else requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
}); }"""


def predict_seconds(url: str) -> tuple[float, float]:
    """(sum, count) of the backend's /predict latency histogram."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    total = re.search(r'dextr_request_seconds_sum\{route="/predict"\} ([0-9.eE+-]+)', text)
    count = re.search(r'dextr_request_seconds_count\{route="/predict"\} ([0-9.eE+-]+)', text)
    return (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)


def pictures(folder: Path, n: int):
    import cv2

    stems = sorted(
        p.stem for p in (folder / "data_GT").glob("*.jpg") if (folder / "boundary_GT" / f"{p.stem}.bmp").exists()
    )
    if not stems:
        sys.exit(f"no GrabCut pictures under {folder} (data_GT/*.jpg with boundary_GT/*.bmp); see --data")
    out = []
    for i in range(n):
        stem = stems[i % len(stems)]
        image = cv2.imread(str(folder / "data_GT" / f"{stem}.jpg"))
        truth = cv2.imread(str(folder / "boundary_GT" / f"{stem}.bmp"), cv2.IMREAD_GRAYSCALE) > 128
        out.append((f"{i:02d}-{stem}.jpg", image, truth))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict:
    return {
        "p50": round(statistics.median(values), 1),
        "p95": round(pct(values, 0.95), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "n": len(values),
    }


def measure(ls, backend, browser, objects, shots: Path | None, mode: str, user, password) -> dict:
    import lsui

    from dextr_backend.geometry import extreme_points

    pid, tasks = lsui.create_project(ls, f"ui-latency-{mode}", lsui_config(), [(n, img) for n, img, _ in objects])
    lsui.connect_backend(ls, pid, backend.url)
    person = lsui.Annotator(browser, ls, shots or Path(tempfile.mkdtemp(prefix="ui-latency-")))
    person.login(user, password)
    ui, round_trip, server, later_round_trip, later_server = [], [], [], [], []
    try:
        for k, (task, (name, _, truth)) in enumerate(zip(tasks, objects)):
            person.open_task(pid, task["id"])
            person.set_auto_annotation(True)
            person.pick_smart_tool("KeyPointTool")
            points = extreme_points(truth).tolist()
            for x, y in points[:3]:
                person.smart_click(x, y, "2")
            before = predict_seconds(backend.url)
            person.page.evaluate(PROBE)  # clock starts at the (last) mouse-up of the 4th click
            it = person.smart_click(*points[3], "2", timeout=120)
            ms = person.page.evaluate("() => window.__dextrLatency")
            after = predict_seconds(backend.url)
            if not it.result:
                raise RuntimeError(f"{mode}: no mask for {name}: {lsui.dump(it.body)}")
            ui.append(ms)
            round_trip.append(it.seconds * 1000)
            if after[1] - before[1] == 1:
                server.append((after[0] - before[0]) * 1000)
            inside = interior_point(truth)
            again = person.smart_click(*inside, "2", timeout=120)
            after_later = predict_seconds(backend.url)
            later_round_trip.append(again.seconds * 1000)
            if after_later[1] - after[1] == 1:
                later_server.append((after_later[0] - after[0]) * 1000)
            if shots and k < 1:
                person.screenshot(f"{mode}-{name}")
            print(
                f"  {mode} {k + 1:2d}/{len(objects)} {name}: ui {ms:7.1f} ms, ls {it.seconds * 1000:7.1f} ms, "
                f"backend {server[-1] if server else float('nan'):7.1f} ms",
                file=sys.stderr,
            )
            person.page.locator("[data-testid=bottombar-reject-suggestions-button]").click()
        lost = person.lost_clicks
    except Exception:
        shot = person.screenshot(f"{mode}-failure")
        print(f"failed; the page at that moment: {shot}", file=sys.stderr)
        raise
    finally:
        person.close()
    return {
        "ui_ms": summary(ui),
        "ls_round_trip_ms": summary(round_trip),
        "backend_predict_ms": summary(server) if server else None,
        "later_ls_round_trip_ms": summary(later_round_trip),
        "later_backend_predict_ms": summary(later_server) if later_server else None,
        "clicks_repeated": lost,
    }


def interior_point(truth) -> tuple[float, float]:
    """The object's pixel farthest from its border: a positive click that changes nothing."""
    import cv2
    import numpy as np

    inside = cv2.distanceTransform(np.asarray(truth, np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(inside)), inside.shape)
    return float(x), float(y)


def lsui_config() -> str:
    from labelstudio_server import SMART_KEYPOINTS_CONFIG

    return SMART_KEYPOINTS_CONFIG


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Needs Playwright for Python and chromium (apt-get install chromium).",
    )
    ap.add_argument("--objects", type=int, default=20, help="objects (tasks) per mode (default 20)")
    ap.add_argument("--modes", default="in-process,queue", help="comma-separated: in-process, queue")
    ap.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data" / "GrabCut",
        help="GrabCut folder (data_GT/, boundary_GT/)",
    )
    ap.add_argument("--label-studio", metavar="URL", help="a running Label Studio (default: start the tests' one)")
    ap.add_argument("--token", help="its legacy API token (with --label-studio)")
    ap.add_argument("--user", default=None, help="login e-mail for the page (with --label-studio)")
    ap.add_argument("--password", default=None, help="login password (with --label-studio)")
    ap.add_argument("--chromium", default=None, help="browser executable (default /usr/bin/chromium)")
    ap.add_argument("--screenshots", type=Path, help="save a screenshot of the first mask of each mode here")
    ap.add_argument(
        "--no-prefetch", action="store_true", help="DEXTR_PREFETCH=0: the first click fetches the picture itself"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"in-process", "queue"}
    if unknown or not modes:
        ap.error(f"unknown mode(s) {sorted(unknown)}; use in-process and/or queue")
    if args.objects < 1:
        ap.error("--objects must be at least 1")

    import labelstudio_server
    import lsui
    from services import Backend, RedisServer, Worker

    if args.chromium:
        os.environ["DEXTR_CHROMIUM"] = args.chromium
    reason = lsui.browser_unavailable()
    if reason:
        sys.exit(reason)
    objects = pictures(args.data, args.objects)
    work = Path(tempfile.mkdtemp(prefix="dextr-ui-latency-"))
    started = []
    if args.label_studio:
        ls = labelstudio_server.LabelStudio(work, port=int(args.label_studio.rsplit(":", 1)[1].split("/")[0]))
        ls.url = args.label_studio.rstrip("/")
        ls.token = args.token or labelstudio_server.TOKEN
        user, password = args.user or labelstudio_server.USER, args.password or labelstudio_server.PASSWORD
    else:
        print("starting Label Studio ...", file=sys.stderr)
        ls = labelstudio_server.start_label_studio(work)
        started.append(ls)
        user, password = labelstudio_server.USER, labelstudio_server.PASSWORD

    from playwright.sync_api import sync_playwright

    results = {}
    try:
        with sync_playwright() as pw:
            browser = lsui.launch(pw)
            for mode in modes:
                (work / mode).mkdir(parents=True, exist_ok=True)
                env = lsui.backend_env(ls, work / mode)
                env["DEXTR_PREFETCH"] = "0" if args.no_prefetch else "1"
                procs = []
                if mode == "queue":
                    redis_server = RedisServer(work / mode / "redis")
                    redis_server.start()
                    procs.append(redis_server)
                    env["REDIS_URL"] = redis_server.url
                    procs.append(Worker(redis_server.url, env, log=work / mode / "worker.log").start(wait=120))
                backend = Backend(env, log=work / mode / "backend.log").start(wait=120)
                procs.append(backend)
                try:
                    print(f"{mode}: {len(objects)} objects", file=sys.stderr)
                    results[mode] = measure(ls, backend, browser, objects, args.screenshots, mode, user, password)
                finally:
                    for p in reversed(procs):
                        p.stop()
            browser.close()
    finally:
        for s in started:
            s.stop()

    if args.json:
        print(json.dumps({"objects": len(objects), "prefetch": not args.no_prefetch, "modes": results}, indent=2))
        return 0
    prefetch = "off" if args.no_prefetch else "on"
    print(f"4th click (the first to segment) and a 5th, {len(objects)} objects per mode, prefetch {prefetch} (ms)")
    print(f"{'mode':<11} {'what':<22} {'p50':>8} {'p95':>8} {'min':>8} {'max':>8}")
    for mode, r in results.items():
        for key, label in (
            ("ui_ms", "click -> mask drawn"),
            ("ls_round_trip_ms", "LS round trip"),
            ("backend_predict_ms", "backend /predict"),
            ("later_ls_round_trip_ms", "5th: LS round trip"),
            ("later_backend_predict_ms", "5th: backend /predict"),
        ):
            s = r.get(key)
            if s:
                print(f"{mode:<11} {label:<22} {s['p50']:8.1f} {s['p95']:8.1f} {s['min']:8.1f} {s['max']:8.1f}")
        if r.get("clicks_repeated"):
            print(f"{mode:<11} ({r['clicks_repeated']} click(s) placed nothing and were made again)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
