"""Fetching a URL by the backend's rules, one checked redirect hop at a time.

Task data names the URLs, so every URL is hostile until checked: only ``http``/``https``, never
user info, and only Label Studio's own origin (scheme, host, port) or a host of
``DEXTR_ALLOWED_HOSTS``. Redirects are followed by hand so that each hop is checked *before*
connecting, and Label Studio's credentials ride along only while the URL and every hop so far
stayed on Label Studio's origin. Errors name the URL the caller gave and a fixed, generic
reason: what a later hop was, or why a socket failed, stays in the (origin-only) log.

A fetch costs a bounded amount: one deadline covers every hop and the body, a body slower than
a minimum rate is cut off, and (with a :class:`FetchGate`) only so many fetches run at once per
host and in all, so that a slow host fills its own lane and nobody else's. A ``data:image`` URI
is no URL: :func:`data_image_bytes` decodes it instead, within the same byte limit.

It runs over 300 lines because these rules are one security boundary, read and reviewed as one.
"""

from __future__ import annotations

import base64
import binascii
import http.cookiejar
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import NamedTuple

import httpx

from ..errors import InputError, ServiceTimeout
from ..redact import shorten
from ..service.json_body import DATA_IMAGE

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
DEFAULT_PORTS = {"http": 80, "https": 443}
CLOUD_SCHEMES = ("s3", "gs", "azure-blob")
RATE_GRACE_SECONDS = 2.0  # the minimum rate applies from then on: connecting and a first byte take a moment


class FetchError(InputError):
    """A checked fetch failed (HTTP 422); ``status`` is the HTTP code when a server answered one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


def origin(url: httpx.URL) -> Origin:
    return Origin(url.scheme, url.host.lower(), url.port or DEFAULT_PORTS.get(url.scheme, 0))


def shown(url) -> str:
    """The caller's URL as an error may quote it: bounded, password masked, control characters escaped.
    Shortened before it is masked, so a megabyte of URL costs what 200 characters do."""
    text = shorten(str(url), 200)
    return text if text.isprintable() and " " not in text else repr(text)


def _problem(url: httpx.URL) -> str | None:
    """Why an absolute URL is never fetched, or None."""
    if url.scheme in CLOUD_SCHEMES:
        return (
            "cloud storage URLs need Label Studio to presign them; serve them through a Label Studio "
            "storage (use_blob_urls) instead"
        )
    if url.scheme not in DEFAULT_PORTS:
        return f"scheme {url.scheme!r}; only http and https are fetched"
    if url.userinfo:
        return "user names and passwords in URLs are refused"
    if not url.host or not 0 < (url.port or 1) < 65536:
        return "not a valid URL"
    return None


def _host_entry(entry: str) -> tuple[str, int | None] | None:
    """``host``, ``host:port`` or ``[v6]:port`` of DEXTR_ALLOWED_HOSTS; a bad port matches nothing."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        host, port = entry, ""
    if not host or (port and not port.isdigit()):
        return None
    return host, int(port) if port else None


def is_allowed(url: httpx.URL, home: Origin | None, allowed_hosts: Iterable[str]) -> bool:
    """Label Studio's own origin, or a host (any port) / host:port of the allow-list."""
    here = origin(url)
    if home is not None and here == home:
        return True
    entries = (_host_entry(e) for e in allowed_hosts)
    return any(e is not None and e[0] == here.host and e[1] in (None, here.port) for e in entries)


def check_url(url: str, *, base: str | None = None, allowed_hosts: Iterable[str] = ()) -> httpx.URL:
    """The absolute URL ``url`` names (relative ones under ``base``, Label Studio's URL), refused with
    an :class:`InputError` unless it may be fetched. No network."""

    def refuse(reason: str) -> InputError:
        return InputError(f"cannot fetch {shown(url)}: not allowed ({reason})")

    if not isinstance(url, str) or not url:
        raise InputError(f"cannot fetch {url!r}: not a URL")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise refuse("the URL contains whitespace or control characters")
    try:
        parsed = httpx.URL(url)
        if not parsed.scheme and not parsed.host:
            if base is None:
                raise refuse("a relative URL needs LABEL_STUDIO_URL or the /setup hostname")
            parsed = httpx.URL(base.rstrip("/") + "/" + url.lstrip("/"))
        elif not parsed.scheme:
            raise refuse("the URL has no scheme")
    except httpx.InvalidURL:
        raise refuse("not a valid URL") from None
    reason = _problem(parsed)
    if reason:
        raise refuse(reason)
    home = origin(httpx.URL(base)) if base else None
    if not is_allowed(parsed, home, allowed_hosts):
        raise refuse(f"host {parsed.host} is neither Label Studio nor in DEXTR_ALLOWED_HOSTS")
    return parsed


class Pool:
    """One thread-safe httpx connection pool, made on first use in each process (a forked worker
    must not share its parent's sockets). No redirects (we check each hop) and no cookies (a
    cookie is a credential that knows no ports)."""

    def __init__(self):
        self._client: httpx.Client | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
                self._client = httpx.Client(follow_redirects=False, cookies=jar)
                self._pid = os.getpid()
            return self._client


SHARED = Pool()


class LaneTimeout(Exception):
    """No lane of a :class:`FetchGate` came free before the fetch's deadline."""


class FetchGate:
    """At most ``total`` fetches at once through this gate, and at most ``per_host`` to one host.

    A fetch waits for its lane no later than its own deadline. One host that answers slowly
    (or never) so holds ``per_host`` lanes at most, and fetches from other hosts go on."""

    def __init__(self, total: int = 16, per_host: int = 4):
        self.total, self.per_host = max(1, total), max(1, per_host)
        self._busy: dict[str, int] = {}
        self._count = 0
        self._free = threading.Condition()

    @contextmanager
    def lane(self, host: str, end: float):
        """One lane to ``host`` for the ``with`` block, waited for until ``end`` (else :class:`LaneTimeout`)."""

        def open_() -> bool:
            return self._count < self.total and self._busy.get(host, 0) < self.per_host

        with self._free:
            if not self._free.wait_for(open_, timeout=max(0.0, end - time.monotonic())):
                raise LaneTimeout(host)
            self._count += 1
            self._busy[host] = self._busy.get(host, 0) + 1
        try:
            yield
        finally:
            with self._free:
                self._count -= 1
                self._busy[host] -= 1
                if not self._busy[host]:
                    del self._busy[host]
                self._free.notify_all()


def fetch_bytes(
    url: str,
    *,
    base: str | None = None,
    auth: Callable[[], dict[str, str]] | None = None,
    allowed_hosts: Iterable[str] = (),
    max_bytes: int,
    timeout: float,
    deadline: float | None = None,
    method: str = "GET",
    payload=None,
    pool: Pool | None = None,
    min_rate: float = 0.0,
    started: float | None = None,
) -> bytes:
    """The body of ``url`` after at most :data:`MAX_REDIRECTS` checked hops.

    ``base`` is Label Studio's URL: relative URLs resolve under it and its origin is always
    allowed; ``auth()`` gives its credential headers, sent only while every hop stayed on that
    origin. ``timeout`` bounds the whole fetch, redirects included; ``deadline`` (a
    ``time.monotonic()`` value) is the caller's own, and the earlier wins: it is checked before
    each hop and between body chunks, and every connect or read may wait only the time left
    when its hop began. A body that arrives slower than ``min_rate`` bytes a second (counted from
    the start, after :data:`RATE_GRACE_SECONDS`) is a failure too. ``started`` (a ``time.monotonic()``
    value) is when the caller began on this fetch, if earlier (waiting for a lane). Refusals raise
    :class:`InputError`, failures :class:`FetchError`, the caller's deadline :class:`ServiceTimeout`.
    """
    allowed_hosts = tuple(allowed_hosts)
    budget = _Budget(shown(url), timeout, deadline, started, min_rate)
    target = check_url(url, base=base, allowed_hosts=allowed_hosts)
    home = origin(httpx.URL(base)) if base else None
    trusted = home is not None and origin(target) == home
    content = json.dumps(payload).encode() if payload is not None else None
    client = (pool or SHARED).client()
    for _ in range(MAX_REDIRECTS + 1):
        headers = _headers(content is not None, auth if trusted else None)
        left = budget.left()
        if left <= 0:
            raise budget.timed_out()
        try:
            with client.stream(method, target, headers=headers, content=content, timeout=left) as resp:
                if resp.status_code in REDIRECTS and resp.headers.get("location"):
                    target = _redirect(resp, target, home, allowed_hosts, budget.name)
                    trusted = trusted and origin(target) == home
                    if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                        method, content = "GET", None
                    continue
                if not 200 <= resp.status_code < 300:
                    raise budget.failed(f"the server answered HTTP {resp.status_code}", resp.status_code)
                return _read(resp, max_bytes, budget)
        except httpx.TimeoutException:
            raise budget.timed_out() from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise budget.broke(exc, target) from None
    raise InputError(f"cannot fetch {budget.name}: too many redirects (more than {MAX_REDIRECTS})")


def _headers(json_body: bool, auth: Callable[[], dict[str, str]] | None) -> dict[str, str]:
    """One hop's request headers: Label Studio's credentials only where ``auth`` is given (every hop
    so far on its origin)."""
    headers = {"Accept-Encoding": "identity"}
    if json_body:
        headers["Content-Type"] = "application/json"
    if auth is not None:
        headers.update(auth())
    return headers


class _Budget:
    """One fetch's clock, and its failures named after the URL the caller gave: the earlier of
    ``timeout`` and the caller's ``deadline``, and the minimum rate after the grace period."""

    def __init__(self, name: str, timeout: float, deadline: float | None, started: float | None, min_rate: float):
        self.name, self.min_rate = name, min_rate
        self.start = time.monotonic() if started is None else started
        end = self.start + timeout
        self.caller_limits = deadline is not None and deadline < end  # then it is the caller's 504
        self.end = min(end, deadline) if deadline is not None else end

    def left(self) -> float:
        return self.end - time.monotonic()

    def failed(self, reason: str, status: int | None = None) -> FetchError:
        return FetchError(f"cannot fetch {self.name}: {reason}", status)

    def timed_out(self) -> InputError | ServiceTimeout:
        message = f"cannot fetch {self.name}: timed out after {round(self.end - self.start, 1):g} s"
        return ServiceTimeout(message) if self.caller_limits else FetchError(message)

    def broke(self, exc: Exception, target: httpx.URL) -> FetchError:
        """A connection that failed: the details (the origin only) to the log, a generic reason out."""
        error = shorten(f"{type(exc).__name__}: {exc}", 300)
        log.warning("fetch failed", extra={"url": self.name, "at": _origin_text(target), "error": error})
        if isinstance(exc, (httpx.ProtocolError, httpx.DecodingError)):
            return self.failed("the answer was not HTTP")
        return self.failed("could not connect")

    def too_slow(self, size: int) -> FetchError | None:
        took = time.monotonic() - self.start
        if self.min_rate > 0 and took > RATE_GRACE_SECONDS and size < self.min_rate * (took - RATE_GRACE_SECONDS):
            return self.failed(
                f"the server sent {size} bytes in {took:.1f} s, slower than "
                f"{self.min_rate / 1000:g} kB/s (DEXTR_FETCH_MIN_RATE_KB)"
            )
        return None


def _redirect(
    resp: httpx.Response, target: httpx.URL, home: Origin | None, allowed_hosts: tuple[str, ...], name: str
) -> httpx.URL:
    """The next hop a redirect names, checked before anything connects to it."""
    try:
        hop = target.join(resp.headers["location"])
    except httpx.InvalidURL:
        hop = None
    if hop is None or _problem(hop) or not is_allowed(hop, home, allowed_hosts):
        log.warning("redirect refused", extra={"url": name, "from": _origin_text(target), "to": _origin_text(hop)})
        raise InputError(f"cannot fetch {name}: redirect to a host that is not allowed")
    return hop


def _read(resp: httpx.Response, max_bytes: int, budget: _Budget) -> bytes:
    """The streamed body, refused (not truncated) past ``max_bytes``, at the deadline, or when too slow."""
    length = resp.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise budget.failed(f"larger than {max_bytes} bytes")
    chunks, size = [], 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise budget.failed(f"larger than {max_bytes} bytes")
        if time.monotonic() > budget.end:
            raise budget.timed_out()
        chunks.append(chunk)
        slow = None if length.isdigit() and size >= int(length) else budget.too_slow(size)  # complete: not slow
        if slow is not None:
            raise slow
    return b"".join(chunks)


def data_image_bytes(uri: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:image/<type>;base64,<data>`` URI, refused past ``max_bytes``: Label Studio
    accepts such task data, and it is the image itself, never a URL to fetch."""
    head, comma, payload = uri[:100].partition(",")
    if not comma or not head.lower().startswith(DATA_IMAGE) or not head.lower().endswith(";base64"):
        raise InputError(f"{shown(uri)}: a data: URI in a task must be an image, as data:image/<type>;base64,<data>")
    payload = uri[len(head) + 1 :]
    if len(payload) > 4 * ((max_bytes + 2) // 3):
        raise InputError(f"the data:image in the task is larger than {max_bytes} bytes (DEXTR_MAX_IMAGE_MB)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{shown(uri)}: the data:image in the task is not valid base64") from None


def _origin_text(url: httpx.URL | None) -> str:
    return "-" if url is None else "{}://{}:{}".format(*origin(url))
