"""Retraining as a team gets it: a real Label Studio project with N accepted labels of a new domain,
*Start Training* pressed through Label Studio's API, held-out mIoU before and after, the promotion
decision with its interval, and wall times.

Everything is real and local: Label Studio 1.23.2 (its cached venv, started as the end-to-end tests
start it: ``tests/labelstudio_server.py``), a private ``redis-server`` (or ``--redis-url``), the
backend (``dextr-backend serve``) and one predict and one training worker (``dextr-backend worker``).
Each size gets a fresh project and a private weights store, so every size starts from the shipped
default. The domain is DAVIS, as in ``finetune_small_data.py``: N frames spread over 000-199 become
tasks whose ground truth is an accepted brush annotation; frames 250-344 are the held-out test.
The job runs with the retraining defaults (``DEXTR_TRAIN_*`` in the environment pass through), and
with a guard folder (``--guard``, default GrabCut: generic objects, never trained on).

``--seeds N`` repeats each size with N choices of frames (seed 0: evenly spread, as before; seed s:
a random draw). ``--harmful`` makes the accepted labels deliberately wrong: ``shift`` moves every
mask by a quarter of its box (right and down), ``swap`` gives every task the next task's mask. A
harmful run must never be promoted; the held-out gain is still measured on the true masks.

    python benchmarks/retrain_labelstudio.py                       # 10, 25, 50 labels
    python benchmarks/retrain_labelstudio.py --sizes 10 --json
    python benchmarks/retrain_labelstudio.py --sizes 10,25,50 --seeds 3
    python benchmarks/retrain_labelstudio.py --sizes 50 --first-seed 2     # seed 2 alone
    python benchmarks/retrain_labelstudio.py --sizes 25 --harmful shift
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
    from dextr_backend.data.objects import as_eval_objects
    from dextr_backend.evaluation.runner import evaluate_objects
    from dextr_backend.models import build_model, load_state
    from dextr_backend.postprocess import PostProcess
    from dextr_backend.predictor import DextrPredictor

    model = load_state(build_model(loaded.arch), loaded.state_dict)
    predictor = DextrPredictor(
        model,
        loaded.input_size,
        threshold=loaded.threshold,
        device="cpu",
        postprocess=PostProcess(trim=loaded.meta.trim),
    )
    return evaluate_objects(predictor, as_eval_objects(refs), progress=False, warmup=False).miou


def train_status(backend_url: str, project: int) -> dict | None:
    with urllib.request.urlopen(backend_url + "/train/status", timeout=10) as r:
        jobs = json.loads(r.read())["jobs"]
    return next((j for j in jobs if j["project"] == project), None)


HARMS = ("shift", "swap")


def shifted(mask):
    """The mask moved right and down by a quarter of its box (what falls off the picture is lost)."""
    import numpy as np

    ys, xs = np.nonzero(mask)
    dx, dy = (xs.max() - xs.min() + 1) // 4, (ys.max() - ys.min() + 1) // 4
    out = np.zeros_like(mask)
    out[dy:, dx:] = mask[: mask.shape[0] - dy, : mask.shape[1] - dx]
    return out


def label_masks(chosen: list, harmful: str | None) -> list:
    """The masks a project's tasks get as accepted labels: the truth, or deliberately wrong ones."""
    import cv2

    truths = [cv2.imread(ref.source, cv2.IMREAD_GRAYSCALE) > 0 for ref in chosen]  # DAVIS: non-zero = object
    if harmful == "shift":
        return [shifted(m) for m in truths]
    if harmful == "swap":  # the next task's mask, fitted to this picture's size
        return [
            cv2.resize(truths[(i + 1) % len(truths)].astype("uint8"), m.shape[::-1], interpolation=cv2.INTER_NEAREST)
            > 0
            for i, m in enumerate(truths)
        ]
    return truths


def choose(pool: list, n: int, seed: int) -> list:
    """Seed 0: ``n`` frames evenly spread over the clips; seed s: ``n`` frames drawn at random."""
    import numpy as np

    if seed == 0:
        return [pool[int(i)] for i in np.linspace(0, len(pool) - 1, n)]
    picks = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[int(i)] for i in sorted(picks)]


def make_project(ls, n: int, chosen: list, harmful: str | None = None, seed: int = 0) -> int:
    """A fresh project with the brush config and one task per frame, its label accepted."""
    from dextr_backend.labelstudio.regions import mask_to_brush

    config = from_tests("labelstudio_server").SMART_KEYPOINTS_CONFIG
    title = f"davis-{n}-seed{seed}" + (f"-{harmful}" if harmful else "")
    project = ls.api("POST", "/api/projects", {"title": title, "label_config": config})["id"]
    for ref in chosen:  # one upload each, so task ids follow the frames
        ls.api(
            "POST",
            f"/api/projects/{project}/import",
            files={"file": (Path(ref.image).name, Path(ref.image).read_bytes())},
        )
    tasks = sorted(
        ls.api("GET", f"/api/tasks?project={project}&fields=all&page_size=1000")["tasks"], key=lambda t: t["id"]
    )
    if len(tasks) != len(chosen):
        raise RuntimeError(f"project {project}: {len(tasks)} tasks for {len(chosen)} uploads")
    for task, truth in zip(tasks, label_masks(chosen, harmful)):
        ls.api(
            "POST",
            f"/api/tasks/{task['id']}/annotations",
            {
                "result": [
                    {
                        "from_name": "tag",
                        "to_name": "image",
                        "type": "brushlabels",
                        "original_width": truth.shape[1],
                        "original_height": truth.shape[0],
                        "image_rotation": 0,
                        "value": {"format": "rle", "rle": mask_to_brush(truth), "brushlabels": ["Object"]},
                    }
                ]
            },
        )
    return project


def run_size(
    n: int,
    args,
    ls,
    services,
    redis_url: str,
    work: Path,
    pool: list,
    test: list,
    before: float,
    seed: int = 0,
    harmful: str | None = None,
) -> dict:
    from dextr_backend.weights.store import WeightsStore

    chosen = choose(pool, n, seed)
    tag = f"{n}-seed{seed}" + (f"-{harmful}" if harmful else "")
    store_dir = work / f"weights-{tag}"
    env = {
        "REDIS_URL": redis_url,
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.token,
        "DEXTR_WEIGHTS_DIR": str(store_dir),
        "DEXTR_WEIGHTS": "",
        "DEXTR_DEVICE": "cpu",
        "DEXTR_DATA_DIR": str(work / f"data-{tag}"),
        "LOG_LEVEL": "INFO",
        **({"DEXTR_TRAIN_GUARD_DIR": args.guard} if args.guard else {}),
    }
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    try:
        procs.append(services.Worker(redis_url, env, log=logs / f"predict-worker-{tag}.log").start())
        procs.append(
            services.Worker(redis_url, env, queues="dextr-train", log=logs / f"train-worker-{tag}.log").start()
        )
        backend = services.Backend(env, log=logs / f"backend-{tag}.log").start()
        procs.append(backend)
        project = make_project(ls, n, chosen, harmful, seed)
        ml = ls.api(
            "POST", "/api/ml", {"project": project, "url": backend.url, "is_interactive": True, "title": "dextr"}
        )
        print(f"{tag}: project {project}, {len(chosen)} tasks; pressing Start Training", file=sys.stderr)
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
                print(
                    f"      {time.monotonic() - pressed:6.0f} s  {status['status']}: {line[0]}"
                    + (f", epochs done {line[1]}" if line[1] is not None else ""),
                    file=sys.stderr,
                )
            time.sleep(1)
        press_to_end = (time.monotonic() - pressed) / 60
    finally:
        for p in reversed(procs):
            p.stop()
    if not status or status["status"] != "finished" or not status.get("result"):
        raise RuntimeError(
            f"{tag}: training did not finish within {args.timeout} min: {json.dumps(status)[:800]}; logs in {logs}"
        )
    outcome = status["result"]["ok"]
    if outcome.get("skipped"):
        raise RuntimeError(f"{tag}: the run was skipped: {outcome.get('reason')}")
    store = WeightsStore(store_dir)
    trained = store.load(outcome["version"])
    current = store.current().name
    after = score(trained, test)
    card = trained.meta.card or {}
    data = card.get("data", {})
    hyper = card.get("hyper_parameters", {})
    exams = {e["name"]: e for e in (outcome.get("decision") or {}).get("exams", [])}
    labels, guard = exams.get("labels", {}), exams.get("guard", {})
    row = {
        "labels": n,
        "seed": seed,
        "harmful": harmful,
        "before": round(before, 2),
        "after": round(after, 2),
        "gain": round(after - before, 2),
        "promoted": bool(outcome["promoted"]),
        "current": current,
        "version": outcome["version"],
        "verdict": (outcome.get("decision") or {}).get("verdict"),
        "job_gain": labels.get("gain"),
        "interval": [labels.get("low"), labels.get("high")],
        "job_objects": labels.get("objects"),
        "guard_gain": guard.get("gain"),
        "guard_interval": [guard.get("low"), guard.get("high")],
        "train_minutes": outcome["minutes"],
        "press_to_promoted_minutes": round(press_to_end, 2),
        "train_images": data.get("train_images"),
        "val_images": data.get("val_images"),
        "val_objects": outcome.get("val_objects"),
        "epochs_done": outcome.get("epochs_done"),
        "stopped": outcome.get("stopped"),
        "epochs": hyper.get("epochs"),
        "samples_per_epoch": hyper.get("samples_per_epoch"),
        "patience": hyper.get("patience"),
        "evaluation": card.get("evaluation"),
        "folds": card.get("folds"),
        "history": [
            {k: (round(v, 2) if isinstance(v, float) else v) for k, v in h.items()} for h in card.get("history", [])
        ],
        "rule": card.get("rule"),
        "reason": outcome["reason"],
    }
    print(
        f"{tag}: held-out {before:.2f} -> {after:.2f} (gain {after - before:+.2f}); "
        f"{'promoted' if row['promoted'] else 'NOT promoted'} ({row['verdict']}); job's interval "
        f"{_span(row['interval'])} on {row['job_objects']} objects, guard {_span(row['guard_interval'])}; "
        f"{press_to_end:.1f} min press to end\n      {outcome['reason']}",
        file=sys.stderr,
    )
    return row


def _span(interval) -> str:
    low, high = interval
    return "-" if low is None or high is None else f"[{low:+.1f}, {high:+.1f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", default=str(DEFAULT_DATA / "DAVIS"), help="DAVIS folder (img/ + gt/)")
    p.add_argument("--sizes", default="10,25,50", help="numbers of accepted labels (one project each)")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="runs per size: seed 0 spreads the frames evenly, seeds 1.. draw them at random",
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        metavar="K",
        help="the seeds run are K to K+N-1 (to add one seed to an earlier run's)",
    )
    p.add_argument(
        "--harmful",
        nargs="?",
        const="shift",
        default=None,
        choices=HARMS,
        help="deliberately wrong labels: shift (every mask moved by a quarter of its box) or swap "
        "(every task gets the next task's mask); such a run must not be promoted",
    )
    p.add_argument(
        "--guard",
        default=str(DEFAULT_DATA / "GrabCut"),
        help="DEXTR_TRAIN_GUARD_DIR for the training worker ('' for none)",
    )
    p.add_argument(
        "--redis-url",
        default=None,
        help="use this Redis instead of a private redis-server (its dextr-train queue must be "
        "served by no other worker)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="minutes to wait for one training run")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for scoring in this process")
    p.add_argument(
        "--workdir",
        default=None,
        help="keep Label Studio, logs and weights here; none means a temporary folder, removed afterwards",
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON line last")
    args = p.parse_args(argv)
    if not (Path(args.data) / "img").is_dir():
        p.exit(2, f"error: {args.data}: not a DAVIS folder (img/ + gt/)\n")
    if args.guard and not Path(args.guard).is_dir():
        p.exit(2, f"error: --guard {args.guard}: no such folder ('' for no guard)\n")
    if args.seeds < 1:
        p.exit(2, f"error: --seeds {args.seeds}: at least 1\n")
    if args.first_seed < 0:
        p.exit(2, f"error: --first-seed {args.first_seed}: 0 or more\n")
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
    shipped = WeightsStore(work / "weights-before").load(None)  # an empty store: the shipped default
    t0 = time.monotonic()
    before = score(shipped, test)
    print(
        f"{shipped.version} on held-out DAVIS 250-344 ({len(test)} objects): mIoU {before:.2f} "
        f"({time.monotonic() - t0:.0f} s)",
        file=sys.stderr,
    )
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
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                rows.append(run_size(n, args, ls, services, redis_url, work, pool, test, before, seed, args.harmful))
    finally:
        if ls:
            ls.stop()
        if redis_server:
            redis_server.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    train_env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("DEXTR_TRAIN_")}
    print(
        f"\nheld-out DAVIS frames 250-344, {len(test)} objects, start: {shipped.version}; one Start Training "
        f"per project" + (f"; {' '.join(f'{k}={v}' for k, v in train_env.items())}" if train_env else "")
    )
    print(f"guard: {args.guard or 'none'}" + (f"; labels deliberately wrong: {args.harmful}" if args.harmful else ""))
    print(
        f"{'labels':>6}  {'seed':>4}  {'before':>7}  {'after':>7}  {'gain':>6}  {'decision':<12}  "
        f"{'job gain [95% interval]':<24}  {'guard gain [95%]':<22}  {'press-to-end min':>16}  folds"
    )
    for r in rows:
        job = "-" if r["job_gain"] is None else f"{r['job_gain']:+.1f} {_span(r['interval'])}"
        guard = "-" if r["guard_gain"] is None else f"{r['guard_gain']:+.1f} {_span(r['guard_interval'])}"
        folds = (r["evaluation"] or {}).get("folds", "hold-out")
        print(
            f"{r['labels']:>6}  {r['seed']:>4}  {r['before']:>7.2f}  {r['after']:>7.2f}  {r['gain']:>+6.2f}  "
            f"{'promoted' if r['promoted'] else 'not':<12}  {job:<24}  {guard:<22}  "
            f"{r['press_to_promoted_minutes']:>16.1f}  {folds}"
        )
    if args.json:
        print(
            json.dumps(
                {
                    "weights": shipped.version,
                    "test_objects": len(test),
                    "env": train_env,
                    "guard": args.guard,
                    "harmful": args.harmful,
                    "rows": rows,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
