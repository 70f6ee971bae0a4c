"""``dextr-backend train-status``: what the training queue is doing, from the command line."""

from __future__ import annotations

import argparse
import json

from . import redis_url


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-status", help="show retraining jobs: progress and results",
                       description="Show every project's latest retraining job (queued, started, finished or "
                                   "failed), its progress and its result. The same data as GET /train/status.")
    p.add_argument("--redis-url", default=None, help="Redis URL (default: $REDIS_URL)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .client import QueueClient

    client = QueueClient(redis_url(args.redis_url, "training jobs live in Redis"))
    client.ping()
    jobs = client.training_status()
    if args.json:
        print(json.dumps({"jobs": jobs}, indent=2))
        return 0
    if not jobs:
        print("no training jobs yet (press Start Training in Label Studio, or POST /webhook START_TRAINING)")
        return 0
    print(f"{'project':>7}  {'status':<9}  {'stage':<18}  {'epoch':>7}  {'val mIoU':>8}  result")
    for j in jobs:
        prog = j["progress"]
        epoch = f"{prog.get('epoch', '-')}/{prog.get('epochs', '-')}"
        val = prog.get("val_miou")
        payload = j["result"] or {}
        res = payload.get("ok", {})
        outcome = (f"{res.get('version')} {'promoted' if res.get('promoted') else 'kept'}" if "version" in res
                   else (payload.get("error") or j["error"] or ""))
        print(f"{j['project']!s:>7}  {j['status']:<9}  {prog.get('stage', '-'):<18}  {epoch:>7}  "
              f"{(f'{val:.2f}' if isinstance(val, (int, float)) else '-'):>8}  {outcome}")
    return 0
