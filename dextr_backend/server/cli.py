"""``dextr-backend serve``: the Label Studio ML backend over HTTP."""

from __future__ import annotations

import argparse
import os


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the Label Studio ML backend (HTTP)",
                       description="Serve /health, /setup, /predict, /webhook, /versions, /train/status and "
                                   "/metrics. With REDIS_URL set, predictions go through the rq queue to "
                                   "`dextr-backend worker` processes; without it they run in this process.")
    p.add_argument("--host", default=os.environ.get("DEXTR_HOST", "0.0.0.0"), help="bind address (default: 0.0.0.0)")
    p.add_argument("--port", type=int, default=int(os.environ.get("DEXTR_PORT", "9090")), help="port (default: 9090)")
    p.add_argument("--workers", type=int, default=1, help="HTTP worker processes (default: 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..settings import Settings

    Settings.from_env()      # fail now, with a clear message, on a malformed setting
    uvicorn.run("dextr_backend.server.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_config=None, access_log=False)
    return 0
