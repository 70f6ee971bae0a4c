"""Servers that play Label Studio, allowed image hosts, internal services and attackers.

Every server logs each request's line, headers and body, so a test can assert that a credential
reached no host but the configured Label Studio origin.
"""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
import time

import cv2
import numpy as np

LEGACY_TOKEN = "legacy-token-4f9d2c7a1b3e5f60"
PAT = (
    "eyJhbGciOiJIUzI1NiJ9."
    + base64.urlsafe_b64encode(json.dumps({"token_type": "refresh", "jti": "pat-secret-77"}).encode())
    .decode()
    .rstrip("=")
    + ".c2lnbmF0dXJlLXNlY3JldA"
)
ACCESS_TOKEN = "access-token-9b8a7c6d5e4f"
SECRETS = (LEGACY_TOKEN, PAT, ACCESS_TOKEN, "pat-secret-77")


def png(value: int, size=(12, 16)) -> bytes:
    """A small grey PNG whose every pixel is ``value``."""
    ok, data = cv2.imencode(".png", np.full((*size, 3), value, np.uint8))
    return data.tobytes()


class Server:
    """A threaded HTTP server on ``address`` answering from ``routes`` (path with query, else path)."""

    def __init__(self, address: str = "127.0.0.1"):
        self.routes: dict[str, object] = {}
        self.log: list[dict] = []
        self.token: str | None = None  # when set, /api/ and /data/ need it (like Label Studio)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.log.append(
                    {
                        "line": self.requestline,
                        "headers": str(self.headers),
                        "authorization": self.headers.get("Authorization"),
                        "body": body,
                        "cookie": self.headers.get("Cookie"),
                    }
                )
                path = self.path
                route = outer.routes.get(path) or outer.routes.get(path.split("?")[0])
                if outer.token and path.startswith(("/api/", "/data/")) and path != "/api/token/refresh/":
                    if self.headers.get("Authorization") not in (f"Token {outer.token}", f"Bearer {outer.token}"):
                        return self.answer(401, b'{"detail": "auth"}')
                if route is None:
                    return self.answer(404, b"not here")
                if callable(route):
                    return route(self, body)
                status, headers, payload = route
                self.answer(status, payload, headers)

            do_GET = do_POST = do_HEAD = handle_one

            def answer(self, status, payload=b"", headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.httpd.daemon_threads = True
        self.address, self.port = address, self.httpd.server_address[1]
        self.netloc = f"{address}:{self.port}"
        self.url = f"http://{self.netloc}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    # ------------------------------------------------------------ routes
    def file(self, path: str, data: bytes, content_type: str = "image/png", headers=None) -> str:
        self.routes[path] = (200, {"Content-Type": content_type, **(headers or {})}, data)
        return self.url + path

    def json(self, path: str, value) -> str:
        return self.file(path, json.dumps(value).encode(), "application/json")

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = (status, {"Location": location}, b"")
        return self.url + path

    def trickle(self, path: str, total: int = 100, every: float = 0.5) -> str:
        """Headers at once, then one byte every ``every`` seconds."""

        def send(handler, _):
            handler.send_response(200)
            handler.send_header("Content-Length", str(total))
            handler.end_headers()
            try:
                for _ in range(total):
                    handler.wfile.write(b"x")
                    handler.wfile.flush()
                    time.sleep(every)
            except OSError:
                pass

        self.routes[path] = send
        return self.url + path

    def stall(self, path: str, seconds: float = 10.0) -> str:
        """No answer at all for ``seconds``."""
        self.routes[path] = lambda handler, _: time.sleep(seconds)
        return self.url + path

    def unbounded(self, path: str, size: int) -> str:
        """``size`` bytes without a Content-Length: the end is where the connection closes."""

        def send(handler, _):
            handler.send_response(200)
            handler.end_headers()
            handler.close_connection = True
            try:
                handler.wfile.write(b"y" * size)
            except OSError:
                pass

        self.routes[path] = send
        return self.url + path

    # ------------------------------------------------------------ what it saw
    def leaks(self, secrets=SECRETS) -> list[str]:
        """Requests that carried an Authorization header, a cookie or any secret value."""
        out = []
        for req in self.log:
            text = req["line"] + req["headers"] + req["body"].decode("latin-1")
            if req["authorization"] or req["cookie"] or any(s in text for s in secrets):
                out.append(req["line"])
        return out

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class GarbageServer:
    """A raw TCP service (think SSH, Redis, a database) that answers anything with non-HTTP bytes."""

    def __init__(self, address: str = "127.0.0.4"):
        self.sock = socket.create_server((address, 0))
        self.port = self.sock.getsockname()[1]
        self.netloc = f"{address}:{self.port}"
        self.url = f"http://{self.netloc}"
        self.log: list[bytes] = []
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.log.append(conn.recv(65536))
                    conn.sendall(b"\x00\xffSSH-2.0-NotHTTP garbage\r\n\x13\x37" * 4)
                except OSError:
                    pass

    def leaks(self, secrets=SECRETS) -> list[bytes]:
        return [r for r in self.log if b"uthorization" in r or any(s.encode() in r for s in secrets)]

    def stop(self) -> None:
        self._stop = True
        self.sock.close()


def fake_label_studio(server: Server, token: str, *, pat: bool = False) -> Server:
    """Make ``server`` answer like Label Studio: auth on /api and /data, and (``pat``) the token
    refresh endpoint that trades the personal access token for :data:`ACCESS_TOKEN`."""
    server.token = ACCESS_TOKEN if pat else token
    if pat:

        def refresh(handler, body):
            ok = json.loads(body or b"{}").get("refresh") == token
            handler.answer(
                200 if ok else 401,
                json.dumps({"access": ACCESS_TOKEN} if ok else {}).encode(),
                {"Content-Type": "application/json"},
            )

        server.routes["/api/token/refresh/"] = refresh
    return server
