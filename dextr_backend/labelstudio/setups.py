"""Which Label Studio a project's images and labels come from, and with which token.

Two sources, never mixed:

- the server's own ``LABEL_STUDIO_URL`` with its ``LABEL_STUDIO_API_KEY``: when the URL is set, it
  is the only Label Studio this backend talks to;
- otherwise the ``hostname`` and ``access_token`` that Label Studio sent in ``/setup`` for that
  project, used together and only for that project.

The server's key is never sent to a host named by a request, and a request body never chooses
where credentials go. ``/setup`` records live in Redis when there is one (so every API process and
every worker sees them), else in this process only.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from dataclasses import dataclass

from ..errors import InputError

log = logging.getLogger(__name__)

SETUP_KEY = "dextr:setup:{project}"
SETUP_TTL_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class Connection:
    """A Label Studio origin and the token that belongs to it (``None``: no credentials)."""

    url: str
    api_key: str | None = None
    source: str = "settings"  # "settings" (LABEL_STUDIO_URL) or "setup" (/setup of the project)


def check_hostname(hostname) -> str:
    """A /setup ``hostname``: an absolute http(s) URL without credentials, path or query."""
    if not isinstance(hostname, str) or not hostname.strip():
        raise InputError("'hostname' must be Label Studio's base URL, e.g. http://label-studio:8080")
    try:
        parts = urllib.parse.urlsplit(hostname.strip())
        _ = parts.port  # raises on a port that is not a number from 0 to 65535
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"'hostname' must be an http:// or https:// URL, got {hostname[:100]!r}")
    if parts.username or parts.password or any(c in hostname for c in "\r\n\t "):
        raise InputError("'hostname' must not carry credentials or whitespace")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class SetupStore:
    """``/setup`` records per project: Redis-backed when given a client, else per process."""

    def __init__(self, redis=None):
        self.redis = redis
        self._local: dict[int, dict] = {}
        self._lock = threading.Lock()

    def put(self, project: int, hostname: str, access_token: str | None) -> None:
        record = {
            "hostname": check_hostname(hostname),
            "access_token": access_token if isinstance(access_token, str) and access_token else None,
        }
        if self.redis is not None:
            self.redis.set(SETUP_KEY.format(project=int(project)), json.dumps(record), ex=SETUP_TTL_SECONDS)
        else:
            with self._lock:
                self._local[int(project)] = record

    def get(self, project: int | None) -> dict | None:
        if project is None:
            return None
        if self.redis is None:
            with self._lock:
                return self._local.get(int(project))
        raw = self.redis.get(SETUP_KEY.format(project=int(project)))
        try:
            record = json.loads(raw) if raw else None
        except ValueError:
            return None
        return record if isinstance(record, dict) else None


def connection_for(settings, setups: SetupStore | None, project: int | None) -> Connection | None:
    """The Label Studio to use for ``project``: the server's own, else the project's /setup, else none."""
    if settings.label_studio_url:
        return Connection(settings.label_studio_url, settings.label_studio_api_key, "settings")
    record = setups.get(project) if setups is not None else None
    if record and record.get("hostname"):
        return Connection(record["hostname"], record.get("access_token"), "setup")
    return None
