"""``dextr-backend`` command line: the top-level parser and the one place errors become exit codes.

Each command is a module of this package with an ``add_parser(subparsers)`` function; they are
imported by name below so that the list of commands (and their ``--help`` order) reads in one place.

User errors (:class:`~dextr_backend.errors.DextrError`), a malformed setting included, end in one
line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import DextrError
from ..logs import setup_logging
from ..redact import redact_text
from ..settings import Settings
from . import demo, evaluate, predict, serve, train, train_status, weights, worker

# The commands, in the order ``--help`` lists them.
COMMANDS = (predict, demo, evaluate, weights, train, serve, worker, train_status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dextr-backend",
        description="DEXTR (Deep Extreme Cut): four extreme clicks in, object mask out.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default: $LOG_LEVEL or INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        setup_logging(args.log_level or settings.log_level, settings.log_format)
        return int(args.func(args) or 0)
    except DextrError as exc:
        print(f"dextr-backend: error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dextr-backend: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
