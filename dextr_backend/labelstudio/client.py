"""A small Label Studio REST client: authentication, labeled tasks, and task images.

Both token kinds of Label Studio 1.23 work: a legacy token is sent as ``Token <key>``; a
personal access token (a JWT refresh token) is exchanged at ``/api/token/refresh/`` for a
short-lived access token sent as ``Bearer``. Credentials go to the Label Studio host only.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator

from ..errors import DextrError, InputError

MAX_IMAGE_BYTES = 50 * 1024 * 1024
ACCESS_TOKEN_SECONDS = 240          # LS access tokens live 300 s; refresh early


class LabelStudioError(DextrError):
    """Label Studio could not be reached, refused us, or answered something unexpected."""


def is_personal_access_token(key: str) -> bool:
    """PATs are JWTs: three base64url parts, the middle one a JSON payload."""
    parts = key.split(".")
    if len(parts) != 3:
        return False
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return False
    return isinstance(payload, dict)


class LabelStudioClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0):
        if not url or not url.startswith(("http://", "https://")):
            raise InputError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.host = urllib.parse.urlsplit(self.url).netloc
        self.api_key = api_key or None
        self.timeout = timeout
        self._access: tuple[str, float] | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ auth
    def auth_header(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        if not is_personal_access_token(self.api_key):
            return {"Authorization": f"Token {self.api_key}"}
        with self._lock:
            if self._access is None or self._access[1] < time.monotonic():
                body = self._request("POST", "/api/token/refresh/", {"refresh": self.api_key}, auth=False)
                if not isinstance(body, dict) or "access" not in body:
                    raise LabelStudioError("Label Studio refused the personal access token (token refresh failed)")
                self._access = (body["access"], time.monotonic() + ACCESS_TOKEN_SECONDS)
            return {"Authorization": f"Bearer {self._access[0]}"}

    def is_own_url(self, url: str) -> bool:
        """Relative URLs and URLs on the Label Studio host itself get our credentials."""
        parts = urllib.parse.urlsplit(url)
        return not parts.netloc or parts.netloc == self.host

    # ------------------------------------------------------------ HTTP
    def _open(self, url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None,
              auth: bool = True):
        full = url if urllib.parse.urlsplit(url).scheme else self.url + "/" + url.lstrip("/")
        hdrs = dict(headers or {})
        if auth and self.is_own_url(full):
            hdrs.update(self.auth_header())
        req = urllib.request.Request(full, data=data, method=method, headers=hdrs)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            hint = " (check the API key)" if exc.code in (401, 403) else ""
            raise LabelStudioError(f"Label Studio answered {exc.code} {exc.reason} for {method} {full}{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LabelStudioError(f"cannot reach {full}: {reason}") from None

    def _request(self, method: str, path: str, payload=None, auth: bool = True):
        data = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        with self._open(path, method, data, headers, auth) as resp:
            raw = resp.read()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise LabelStudioError(f"Label Studio sent non-JSON for {method} {path}") from None

    def get(self, path: str):
        return self._request("GET", path)

    def post(self, path: str, payload):
        return self._request("POST", path, payload)

    # ------------------------------------------------------------ API
    def project(self, project: int) -> dict:
        return self.get(f"/api/projects/{int(project)}")

    def tasks(self, project: int, page_size: int = 100) -> Iterator[dict]:
        """Every task of a project with its annotations (``fields=all``), page by page."""
        page = 1
        while True:
            try:
                body = self.get(f"/api/tasks?project={int(project)}&fields=all&page={page}&page_size={page_size}")
            except LabelStudioError as exc:
                if page > 1 and "404" in str(exc):   # LS answers 404 past the last page
                    return
                raise
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            yield from tasks
            total = body.get("total") if isinstance(body, dict) else None
            if not tasks or len(tasks) < page_size or (total is not None and page * page_size >= total):
                return
            page += 1

    def fetch(self, url: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
        """Bytes of a task's data URL (``/data/upload/...``, ``/data/local-files/?d=...`` or absolute)."""
        if url.startswith(("s3://", "gs://", "azure-blob://")):
            raise InputError(f"cloud storage URL {url!r} needs Label Studio to presign it; "
                             "serve it through a Label Studio storage (use_blob_urls) instead")
        with self._open(url) as resp:
            return read_limited(resp, url, max_bytes)


def read_limited(resp, url: str, max_bytes: int) -> bytes:
    """The body of an HTTP response, refused (not truncated) when it exceeds ``max_bytes``."""
    length = resp.headers.get("Content-Length")
    if length and int(length) > max_bytes:
        raise InputError(f"{url}: {int(length)} bytes exceeds the {max_bytes}-byte limit")
    data = resp.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"{url}: larger than the {max_bytes}-byte limit")
    return data


def fetch_public(url: str, max_bytes: int = MAX_IMAGE_BYTES, timeout: float = 30.0) -> bytes:
    """An absolute URL on an allowed host other than Label Studio: fetched without credentials."""
    req = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return read_limited(resp, url, max_bytes)
    except urllib.error.HTTPError as exc:
        raise LabelStudioError(f"{url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LabelStudioError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
