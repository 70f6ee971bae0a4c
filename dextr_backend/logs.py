"""Structured logs: one JSON object per line on stderr, level from ``LOG_LEVEL``.

Set ``LOG_FORMAT=text`` for plain human-readable lines instead.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from .redact import redact_text

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; every URL in it loses its password (see :mod:`.redact`)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        out.update(
            {k: redact_text(v) if isinstance(v, str) else v for k, v in vars(record).items() if k not in _RESERVED}
        )
        if record.exc_info:
            out["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class RedactingFormatter(logging.Formatter):
    """The plain-text format, with the same redaction."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def setup_logging(level: str | None = None, log_format: str = "json") -> None:
    """Log to stderr at ``level`` (default INFO) as JSON lines, or as text with ``log_format="text"``."""
    level = (level or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    if log_format.lower() == "text":
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level, logging.INFO))
