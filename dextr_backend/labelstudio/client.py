"""A small Label Studio REST client: authentication, labeled tasks, and task images.

Both token kinds of Label Studio 1.23 work: a legacy token is sent as ``Token <key>``; a
personal access token (a JWT refresh token) is exchanged at ``/api/token/refresh/`` for a
short-lived access token sent as ``Bearer``. Every request goes through :mod:`.fetch`, so
credentials reach Label Studio's own origin only, whatever a URL or a redirect says.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterable, Iterator

from ..errors import DextrError, InputError
from .fetch import FetchError, Pool, check_url, data_image_bytes, fetch_bytes, origin

MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_API_BYTES = 256 * 1024 * 1024  # a page of tasks with brush RLEs, with room to spare
ACCESS_TOKEN_SECONDS = 240  # LS access tokens live 300 s; refresh early


class LabelStudioError(DextrError):
    """Label Studio could not be reached, refused us, or answered something unexpected."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


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
    """One Label Studio origin, its token, and its own connection pool (thread-safe).

    ``allowed_hosts`` are the other hosts :meth:`fetch` may read task images from (without
    credentials); ``fetch_timeout`` bounds one image fetch, redirects included."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        allowed_hosts: Iterable[str] = (),
        fetch_timeout: float = 20.0,
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InputError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        try:
            parsed = check_url(self.url, base=self.url)
        except InputError as exc:
            raise InputError(f"Label Studio URL: {exc}") from None
        self.origin = origin(parsed)
        self.host = parsed.netloc.decode("ascii")
        self.api_key = api_key or None
        self.timeout = timeout
        self.allowed_hosts = tuple(allowed_hosts)
        self.fetch_timeout = fetch_timeout
        self.pool = Pool()
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
                if not isinstance(body, dict) or not isinstance(body.get("access"), str):
                    raise LabelStudioError("Label Studio refused the personal access token (token refresh failed)")
                self._access = (body["access"], time.monotonic() + ACCESS_TOKEN_SECONDS)
            return {"Authorization": f"Bearer {self._access[0]}"}

    # ------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, payload=None, auth: bool = True):
        """A REST call: Label Studio's origin only, redirects included."""
        try:
            raw = fetch_bytes(
                self.url + "/" + path.lstrip("/"),
                base=self.url,
                auth=self.auth_header if auth else None,
                max_bytes=MAX_API_BYTES,
                timeout=self.timeout,
                method=method,
                payload=payload,
                pool=self.pool,
            )
        except FetchError as exc:
            hint = " (check the API key)" if exc.status in (401, 403) else ""
            raise LabelStudioError(f"Label Studio: {exc}{hint}", exc.status) from None
        except InputError as exc:
            raise LabelStudioError(f"Label Studio: {exc}") from None
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
                if page > 1 and exc.status == 404:  # LS answers 404 past the last page
                    return
                raise
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            yield from tasks
            total = body.get("total") if isinstance(body, dict) else None
            if not tasks or len(tasks) < page_size or (total is not None and page * page_size >= total):
                return
            page += 1

    def fetch(
        self,
        url: str,
        max_bytes: int = MAX_IMAGE_BYTES,
        deadline: float | None = None,
        *,
        allowed_hosts: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Bytes of a task's data URL (``/data/upload/...``, ``/data/local-files/?d=...`` or absolute):
        Label Studio's origin with our token, ``allowed_hosts`` (default: the client's) without.
        A ``data:image/...;base64,`` URI is decoded, never fetched."""
        if url[:5].lower() == "data:":
            return data_image_bytes(url, max_bytes)
        return fetch_bytes(
            url,
            base=self.url,
            auth=self.auth_header,
            allowed_hosts=self.allowed_hosts if allowed_hosts is None else allowed_hosts,
            max_bytes=max_bytes,
            timeout=self.fetch_timeout if timeout is None else timeout,
            deadline=deadline,
            pool=self.pool,
        )
