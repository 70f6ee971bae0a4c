"""Retraining as a team gets it: a real Label Studio project with N accepted labels of a new domain,
*Start Training* pressed through Label Studio's API, held-out mIoU before and after, wall times.

Everything is real and local: Label Studio 1.23.2 (its cached venv, started as the end-to-end tests
start it: ``tests/labelstudio_server.py``), a private ``redis-server`` (or ``--redis-url``), the
backend (``dextr-backend serve``) and one predict and one training worker (``dextr-backend worker``).
Each size gets a fresh project and a private weights store, so every size starts from the shipped
default. The domain is DAVIS, as in ``finetune_small_data.py``: N frames spread over 000-199 become
tasks whose ground truth is an accepted brush annotation; frames 250-344 are the held-out test.
The job runs with the retraining defaults (``DEXTR_TRAIN_*`` in the environment pass through).

    python benchmarks/retrain_labelstudio.py                       # 10, 25, 50 labels
    python benchmarks/retrain_labelstudio.py --sizes 10 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DEXTR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def from_tests(name: str):
    """A helper module of the test suite (``tests/<name>.py``), imported by path: the benchmark
    starts Label Studio, Redis, the backend and workers exactly as the end-to-end tests do."""
    spec = importlib.util.spec_from_file_location(f"dextr_bench_{name}", ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def frame(path) -> int:
    return int(Path(path).stem)


def score(loaded, refs) -> float:
    """Held-out mIoU of a weights version, as ``finetune_small_data.py`` scores it."""
    from dextr_backend.evaluation.runner import evaluate_objects
    from dextr_backend.models import build_model, load_state
    from dextr_backend.postprocess import PostProcess
    from dextr_backend.predictor import DextrPredictor
    from dextr_backend.data.objects import as_eval_objects

    model = load_state(build_model(loaded.arch), loaded.state_dict)
    predictor = DextrPredictor(model, loaded.input_size, threshold=loaded.threshold, device="cpu",
                               postprocess=PostProcess(trim=loaded.meta.trim))
    return evaluate_objects(predictor, as_eval_objects(refs), progress=False, warmup=False).miou


def train_status(backend_url: str, project: int) -> dict | None:
    with urllib.request.urlopen(backend_url + "/train/status", timeout=10) as r:
        jobs = json.loads(r.read())["jobs"]
    return next((j for j in jobs if j["project"] == project), None)


def make_project(ls, n: int, chosen: list) -> int:
    """A fresh project with the brush config and one task per frame, its ground truth accepted."""
    import cv2

    from dextr_backend.labelstudio.regions import mask_to_brush

    config = from_tests("labelstudio_server").SMART_KEYPOINTS_CONFIG
    project = ls.api("POST", "/api/projects", {"title": f"davis-{n}", "label_config": config})["id"]
    for ref in chosen:          # one upload each, so task ids follow the frames
        ls.api("POST", f"/api/projects/{project}/import",
               files={"file": (Path(ref.image).name, Path(ref.image).read_bytes())})
    tasks = sorted(ls.api("GET", f"/api/tasks?project={project}&fields=all&page_size=1000")["tasks"],
                   key=lambda t: t["id"])
    if len(tasks) != len(chosen):
        raise RuntimeError(f"project {project}: {len(tasks)} tasks for {len(chosen)} uploads")
    for task, ref in zip(tasks, chosen):
        truth = cv2.imread(ref.source, cv2.IMREAD_GRAYSCALE) > 0     # DAVIS: any non-zero value is the object
        ls.api("POST", f"/api/tasks/{task['id']}/annotations", {"result": [{
            "from_name": "tag", "to_name": "image", "type": "brushlabels", "original_width": truth.shape[1],
            "original_height": truth.shape[0], "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_brush(truth), "brushlabels": ["Object"]}}]})
    return project


def run_size(n: int, args, ls, services, redis_url: str, work: Path, pool: list, test: list, before: float) -> dict:
    import numpy as np

    from dextr_backend.weights.store import WeightsStore

    chosen = [pool[int(i)] for i in np.linspace(0, len(pool) - 1, n)]     # spread over the clips
    store_dir = work / f"weights-{n}"
    env = {"REDIS_URL": redis_url, "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token,
           "DEXTR_WEIGHTS_DIR": str(store_dir), "DEXTR_WEIGHTS": "", "DEXTR_DEVICE": "cpu",
           "DEXTR_DATA_DIR": str(work / f"data-{n}"), "LOG_LEVEL": "INFO"}
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    try:
        procs.append(services.Worker(redis_url, env, log=logs / f"predict-worker-{n}.log").start())
        procs.append(services.Worker(redis_url, env, queues="dextr-train", log=logs / f"train-worker-{n}.log").start())
        backend = services.Backend(env, log=logs / f"backend-{n}.log").start()
        procs.append(backend)
        project = make_project(ls, n, chosen)
        ml = ls.api("POST", "/api/ml", {"project": project, "url": backend.url, "is_interactive": True,
                                        "title": "dextr"})
        print(f"{n:>3} labels: project {project}, {len(chosen)} tasks; pressing Start Training", file=sys.stderr)
        pressed = time.monotonic()
        ls.api("POST", f"/api/ml/{ml['id']}/train", {})
        deadline = pressed + args.timeout * 60
        status, shown = None, None
        while time.monotonic() < deadline:
            status = train_status(backend.url, project)
            if status and status["status"] in ("finished", "failed") and status["state"] not in ("queued", "running"):
                break
            line = status and (status["progress"].get("stage"), status["progress"].get("epochs_done"))
            if line != shown and status:
                shown = line
                print(f"      {time.monotonic() - pressed:6.0f} s  {status['status']}: {line[0]}"
                      + (f", epochs done {line[1]}" if line[1] is not None else ""), file=sys.stderr)
            time.sleep(1)
        press_to_end = (time.monotonic() - pressed) / 60
    finally:
        for p in reversed(procs):
            p.stop()
    if not status or status["status"] != "finished" or not status.get("result"):
        raise RuntimeError(f"{n} labels: training did not finish within {args.timeout} min: "
                           f"{json.dumps(status)[:800]}; logs in {logs}")
    outcome = status["result"]["ok"]
    if outcome.get("skipped"):
        raise RuntimeError(f"{n} labels: the run was skipped: {outcome.get('reason')}")
    store = WeightsStore(store_dir)
    trained = store.load(outcome["version"])
    current = store.current().name
    after = score(trained, test)
    card = trained.meta.card or {}
    data = card.get("data", {})
    hyper = card.get("hyper_parameters", {})
    row = {"labels": n, "before": round(before, 2), "after": round(after, 2), "gain": round(after - before, 2),
           "promoted": bool(outcome["promoted"]), "current": current, "version": outcome["version"],
           "train_minutes": outcome["minutes"], "press_to_promoted_minutes": round(press_to_end, 2),
           "train_images": data.get("train_images"), "val_images": data.get("val_images"),
           "val_objects": outcome.get("val_objects"), "epochs_done": outcome.get("epochs_done"),
           "stopped": outcome.get("stopped"), "epochs": hyper.get("epochs"),
           "samples_per_epoch": hyper.get("samples_per_epoch"), "patience": hyper.get("patience"),
           "history": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in h.items()}
                       for h in card.get("history", [])],
           "reason": outcome["reason"]}
    verdict = "promoted" if row["promoted"] else "NOT promoted (scored the trained version anyway)"
    print(f"{n:>3} labels: {before:.2f} -> {after:.2f} ({after - before:+.2f}), {verdict}; training "
          f"{row['train_minutes']:.1f} min, press to end {press_to_end:.1f} min; {outcome['reason']}",
          file=sys.stderr)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA / "DAVIS"), help="DAVIS folder (img/ + gt/)")
    p.add_argument("--sizes", default="10,25,50", help="numbers of accepted labels (one project each)")
    p.add_argument("--redis-url", default=None,
                   help="use this Redis instead of a private redis-server (its dextr-train queue must be "
                        "served by no other worker)")
    p.add_argument("--timeout", type=float, default=60.0, help="minutes to wait for one training run")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for scoring in this process")
    p.add_argument("--workdir", default=None, help="keep Label Studio, logs and weights here; none means a "
                                                   "temporary folder, removed afterwards")
    p.add_argument("--json", action="store_true", help="print the results as one JSON line last")
    args = p.parse_args(argv)
    if not (Path(args.data) / "img").is_dir():
        p.exit(2, f"error: {args.data}: not a DAVIS folder (img/ + gt/)\n")
    return run(args)


def run(args: argparse.Namespace) -> int:
    import torch

    from dextr_backend.data.objects import folder_objects
    from dextr_backend.weights.store import WeightsStore

    torch.set_num_threads(args.threads)
    lss, services = from_tests("labelstudio_server"), from_tests("services")
    refs = folder_objects(args.data)
    pool = [r for r in refs if frame(r.image) < 200]
    test = [r for r in refs if frame(r.image) >= 250]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dextr-retrain-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    shipped = WeightsStore(work / "weights-before").load(None)     # an empty store: the shipped default
    t0 = time.monotonic()
    before = score(shipped, test)
    print(f"{shipped.version} on held-out DAVIS 250-344 ({len(test)} objects): mIoU {before:.2f} "
          f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    redis_server, ls, rows = None, None, []
    try:
        if args.redis_url:
            redis_url = args.redis_url
        else:
            redis_server = services.RedisServer(work / "redis")
            redis_server.start()
            redis_url = redis_server.url
        t0 = time.monotonic()
        ls = lss.start_label_studio(work)
        print(f"Label Studio {lss.VERSION} at {ls.url} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        for n in [int(s) for s in args.sizes.split(",")]:
            rows.append(run_size(n, args, ls, services, redis_url, work, pool, test, before))
    finally:
        if ls:
            ls.stop()
        if redis_server:
            redis_server.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    train_env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("DEXTR_TRAIN_")}
    print(f"\nheld-out DAVIS frames 250-344, {len(test)} objects, start: {shipped.version}; one Start Training "
          f"per project" + (f"; {' '.join(f'{k}={v}' for k, v in train_env.items())}" if train_env else ""))
    print(f"{'labels':>6}  {'before':>7}  {'after':>7}  {'gain':>6}  {'train min':>9}  {'press-to-end min':>16}  "
          f"{'promoted':>8}  {'train/val images':>16}  {'epochs':>6}  stopped")
    for r in rows:
        print(f"{r['labels']:>6}  {r['before']:>7.2f}  {r['after']:>7.2f}  {r['gain']:>+6.2f}  {r['train_minutes']:>9.1f}  "
              f"{r['press_to_promoted_minutes']:>16.1f}  {'yes' if r['promoted'] else 'no':>8}  "
              f"{str(r['train_images']) + ' / ' + str(r['val_images']):>16}  {r['epochs_done']!s:>6}  {r['stopped']}")
    if args.json:
        print(json.dumps({"weights": shipped.version, "test_objects": len(test), "env": train_env, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
