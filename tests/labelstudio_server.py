"""A real Label Studio for the tests: pip-installed into its own cached venv, started on a free port.

The venv (``$DEXTR_LS_VENV``, default ``~/.cache/dextr-backend/label-studio-<version>``) and a
migrated data directory are built once and reused, so later runs start Label Studio in seconds
instead of a minute. Everything it writes goes under the test's temporary directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

VERSION = "1.23.2"
CACHE = Path(os.environ.get("DEXTR_TEST_CACHE", Path.home() / ".cache" / "dextr-backend"))
VENV = Path(os.environ.get("DEXTR_LS_VENV", CACHE / f"label-studio-{VERSION}"))
TEMPLATE = CACHE / f"label-studio-{VERSION}-data"
TOKEN = "dextrtesttoken0123456789abcdef0123456789"
USER, PASSWORD = "admin@example.com", "dextr-test-password"
SECRET_KEY = "dextrbackendtestsecretkey0123456789abcdefgh"
# The labeling config annotators use: smart keypoints (the extreme points) that become brush masks.
SMART_KEYPOINTS_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image"><Label value="Object" background="#FF0000"/></BrushLabels>
  <KeyPointLabels name="tag2" toName="image" smart="true">
    <Label value="Object" smart="true" background="#000000" showInline="true"/>
  </KeyPointLabels>
</View>"""


class LabelStudioUnavailable(RuntimeError):
    pass


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ensure_installed() -> Path:
    """The ``label-studio`` executable, installing it from PyPI on first use."""
    exe = VENV / "bin" / "label-studio"
    marker = VENV / ".dextr-installed"
    with _locked(CACHE / "label-studio.lock"):
        if not marker.exists():
            shutil.rmtree(VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            proc = subprocess.run(
                [str(VENV / "bin" / "pip"), "install", "-q", f"label-studio=={VERSION}"], capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise LabelStudioUnavailable(f"pip install label-studio=={VERSION} failed: {proc.stderr[-500:]}")
            marker.touch()
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    """One running server; ``url``, ``token`` and a tiny JSON ``api`` helper."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = TOKEN
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        home = self.data_dir / "home"
        files = self.data_dir / "files"
        for d in (home, files):
            d.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "LABEL_STUDIO"))}
        env.update(
            LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir / "ls"),
            SECRET_KEY=SECRET_KEY,
            LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
            LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(files),
            LATEST_VERSION_CHECK="false",
            COLLECT_ANALYTICS="false",
            SENTRY_DSN="",
            FRONTEND_SENTRY_DSN="",
            ML_BLOCK_LOCAL_IP="false",
            SSRF_PROTECTION_ENABLED="false",
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_DATA_HOME=str(home / ".local/share"),
            XDG_CACHE_HOME=str(home / ".cache"),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self, timeout: float = 240.0) -> LabelStudio:
        exe = ensure_installed()
        log = open(self.data_dir / "label-studio.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(exe),
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--username",
                USER,
                "--password",
                PASSWORD,
                "--enable-legacy-api-token",
                "--user-token",
                TOKEN,
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabelStudioUnavailable(
                    f"label-studio exited ({self.proc.returncode}); see {self.data_dir / 'label-studio.log'}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200 and self._token_works():
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1.0)
        self.stop()
        raise LabelStudioUnavailable(f"label-studio did not answer within {timeout:.0f} s")

    def _token_works(self) -> bool:
        try:
            self.api("GET", "/api/projects")
            return True
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()

    # -------------------------------------------------------------- API helpers for tests
    def api(self, method: str, path: str, payload=None, *, files: dict | None = None):
        headers = {"Authorization": f"Token {self.token}"}
        data = None
        if files:
            boundary = "dextrboundary7d0a1c"
            parts = []
            for name, (filename, content) in files.items():
                parts.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                    f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                    + content
                    + b"\r\n"
                )
            data = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
        return json.loads(raw) if raw else None


def start_label_studio(tmp_dir: Path) -> LabelStudio:
    """Start a server on a copy of the cached, already-migrated data directory."""
    with _locked(CACHE / "label-studio-data.lock"):
        if not (TEMPLATE / ".ready").exists():
            shutil.rmtree(TEMPLATE, ignore_errors=True)
            TEMPLATE.mkdir(parents=True)
            first = LabelStudio(TEMPLATE).start()  # runs the migrations and creates the user
            first.stop()
            (TEMPLATE / ".ready").touch()
    data = Path(tmp_dir) / "label-studio"
    shutil.copytree(TEMPLATE, data, ignore=shutil.ignore_patterns("*.log", ".ready"))
    return LabelStudio(data).start()
