"""``dextr-backend train-status``: what the training queue is doing, from the command line.

The table itself is :func:`dextr_backend.queue.status.table`, beside the records it reads.
"""

from __future__ import annotations

import argparse
import json

from ..queue import redis_url


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-status", help="show retraining: state, progress, recent runs and why",
                       description="Show every project's retraining: queued or running, the running run's "
                                   "stage and progress, and its recent runs with why each version was or was "
                                   "not promoted. The same data as GET /train/status.")
    p.add_argument("--redis-url", default=None, help="Redis URL (default: $REDIS_URL)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..queue.client import QueueClient
    from ..queue.status import table
    from ..settings import Settings

    client = QueueClient(redis_url(args.redis_url or Settings.from_env().redis_url, "training jobs live in Redis"))
    client.ping()
    jobs = client.training_status()
    if args.json:
        print(json.dumps({"jobs": jobs}, indent=2))
        return 0
    if not jobs:
        print("no training jobs yet (press Start Training in Label Studio, or POST /webhook START_TRAINING)")
        return 0
    print(table(jobs))
    return 0
