"""``dextr-backend train-status``: what the training queue is doing, from the command line, as a
text table of every project's retraining (the same data as GET /train/status), with each finished
run's promotion decision: the sentence, every exam's gain and interval, and the rule."""

from __future__ import annotations

import argparse
import json

from ..queue import redis_url

RUNS_SHOWN = 5


def _progress(run: dict) -> str:
    prog = run.get("progress") or {}
    epochs = prog.get("epochs", "-")
    if run.get("status") == "running" and prog.get("steps_per_epoch"):
        return f"epoch {prog.get('epoch')}/{epochs} step {prog.get('step')}/{prog['steps_per_epoch']}"
    if "epochs_done" in prog:
        return f"{prog['epochs_done']}/{epochs} epochs"
    return "-"


def _interval(exam: dict) -> str:
    """``+5.1 [+3.2, +7.0] on 25 objects``: a paired gain in mIoU points with its interval."""
    if exam.get("gain") is None:
        return f"{exam.get('candidate', 0):.1f} on {exam.get('objects')} objects (nothing to compare with)"
    span = "" if exam.get("low") is None else f" [{exam['low']:+.1f}, {exam['high']:+.1f}]"
    return f"{exam['gain']:+.1f}{span} on {exam.get('objects')} objects"


def _outcome(run: dict) -> str:
    if run.get("error"):
        return run["error"]
    result = run.get("result") or {}
    decision = result.get("decision") or {}
    if "version" in result and decision.get("exams"):
        kept = "promoted" if result.get("promoted") else "not promoted"
        return f"{result['version']}: {kept} ({decision.get('verdict')}; gain {_interval(decision['exams'][0])})"
    if "version" in result:
        return f"{result['version']}: {result.get('reason') or ('promoted' if result.get('promoted') else 'kept')}"
    return run.get("note") or "-"


def _why(run: dict) -> list[str]:
    """The decision's sentence, and each exam's gain and interval, under a finished run's row."""
    decision = ((run.get("result") or {}).get("decision")) or {}
    if not decision:
        return []
    exams = "; ".join(f"{e['name']} {_interval(e)}" for e in decision.get("exams", []))
    return [f"{'':<10}why: {decision.get('sentence', '')}", f"{'':<10}gains (95% interval): {exams}"]


def _when(stamp: str | None) -> str:
    return (stamp or "-").replace("T", " ")[:19]


def table(projects: list[dict]) -> str:
    lines = []
    for p in projects:
        head = f"project {p['project']}: {p['status']}"
        if p.get("job"):
            head += f" (job {p['job']})"
        if p.get("again"):
            head += ", one more run scheduled after this one"
        lines.append(head)
        if p.get("note"):
            lines.append(f"  note: {p['note']}")
        runs = p.get("runs", [])[:RUNS_SHOWN]
        if runs:
            lines.append(
                f"  {'run':<8} {'started':<19}  {'status':<11}  {'stage':<24}  {'progress':<26}  "
                f"{'val mIoU':>8}  outcome"
            )
        for r in runs:
            val = (r.get("progress") or {}).get("val_miou")
            val = f"{val:.2f}" if isinstance(val, (int, float)) else "-"
            lines.append(
                f"  {r['run']:<8} {_when(r.get('started')):<19}  {r.get('status', '-'):<11}  "
                f"{str(r.get('stage', '-'))[:24]:<24}  {_progress(r):<26}  {val:>8}  {_outcome(r)}"
            )
            lines.extend(_why(r))
        decided = (((r.get("result") or {}).get("decision") or {}).get("rule") for r in runs)
        rules = {rule for rule in decided if rule is not None}
        lines.extend(f"  rule: {rule}" for rule in sorted(rules))
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-status",
        help="show retraining: state, progress, recent runs and why",
        description="Show every project's retraining: queued or running, the running run's "
        "stage and progress, and its recent runs with why each version was or was "
        "not promoted. The same data as GET /train/status.",
    )
    p.add_argument("--redis-url", default=None, help="Redis URL (default: $REDIS_URL)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..queue.client import QueueClient
    from ..queue.liveness import heartbeat
    from ..settings import Settings
    from ..training_runs import TrainingRuns

    client = QueueClient(redis_url(args.redis_url or Settings.from_env().redis_url, "training jobs live in Redis"))
    client.ping()  # Redis down: one clear line naming it, before any table
    jobs = TrainingRuns(client.redis).status(heartbeat)
    if args.json:
        print(json.dumps({"jobs": jobs}, indent=2))
        return 0
    if not jobs:
        print("no training jobs yet (press Start Training in Label Studio, or POST /webhook START_TRAINING)")
        return 0
    print(table(jobs))
    return 0
