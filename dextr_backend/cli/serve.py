"""``dextr-backend serve``: the Label Studio ML backend over HTTP."""

from __future__ import annotations

import argparse

from .options import add_engine


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the Label Studio ML backend (HTTP)",
        description="Serve /health, /setup, /predict, /webhook, /versions, /train/status and "
        "/metrics. With REDIS_URL set, predictions go through the rq queue to "
        "`dextr-backend worker` processes; without it they run in this process.",
    )
    p.add_argument("--host", default=None, help="bind address (default: $DEXTR_HOST, else 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="port (default: $DEXTR_PORT, else 9090)")
    p.add_argument("--workers", type=int, default=1, help="HTTP worker processes (default: 1)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch per process (default: $DEXTR_THREADS, else the CPUs this process "
        "may use divided by --workers)",
    )
    add_engine(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..errors import InputError
    from ..settings import Settings, share_engine, share_threads
    from ..threads import thread_count

    settings = Settings.from_env()  # fail now, with a clear message, on a malformed setting
    if args.workers < 1:
        raise InputError(f"--workers {args.workers}: at least 1")
    threads = thread_count(args.threads if args.threads is not None else settings.threads, args.workers)
    share_threads(threads)  # what each server process reads in create_app
    if args.engine is not None:
        share_engine(args.engine)  # and what each one builds its predictor with
    if args.workers > 1 and not settings.redis_url:
        import logging

        logging.getLogger(__name__).warning(
            "--workers %d without REDIS_URL: each process keeps its own model, image cache and /setup records",
            args.workers,
        )
    host = settings.host if args.host is None else args.host
    port = settings.port if args.port is None else args.port
    uvicorn.run(
        "dextr_backend.labelstudio_api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=args.workers,
        log_config=None,
        access_log=False,
    )
    return 0
