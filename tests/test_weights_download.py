"""Downloads against a real HTTP server on 127.0.0.1: verified, mismatched, truncated, missing, unreachable."""

from __future__ import annotations

import hashlib
import io
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from dextr_backend.cli import main
from dextr_backend.errors import WeightsError
from dextr_backend.models import build_model
from dextr_backend.settings import Settings
from dextr_backend.weights import WeightsStore
from dextr_backend.weights.download import fetch, install, mirrored


@pytest.fixture(scope="module")
def payload() -> bytes:
    """A real lite0 checkpoint, as bytes a server can send."""
    buf = io.BytesIO()
    torch.save(build_model("lite0").state_dict(), buf)
    return buf.getvalue()


@pytest.fixture()
def server(payload):
    """Serves ``routes`` (path -> bytes); paths under /short/ announce more bytes than they send."""
    routes = {
        "/good.pth": payload,
        "/page.pth": b"<html>maintenance</html>",
        "/models/dextr_pascal-sbd.pth": payload,
        "/short/good.pth": payload,
    }
    requested = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            requested.append(self.path)
            body = routes.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            short = self.path.startswith("/short/")
            self.send_header("Content-Length", str(len(body) + (1000 if short else 0)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if short else body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.requested = requested
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def store(weights_dir, tmp_path) -> WeightsStore:
    (tmp_path / "shipped").mkdir()
    return WeightsStore(weights_dir, shipped_dir=tmp_path / "shipped")


def say(message: str) -> None:
    """What the CLI does with install's messages."""
    print(message, file=sys.stderr)


def stray_files(store: WeightsStore) -> list[str]:
    """Anything in the store besides the manifest and its lock."""
    if not store.root.exists():
        return []
    return sorted(p.name for p in store.root.iterdir() if p.name not in ("manifest.json", ".manifest.lock"))


def test_download_verified_by_sha256(store, server, payload, capsys):
    digest = hashlib.sha256(payload).hexdigest()
    v = install(
        store,
        "mine",
        url=server.base + "/good.pth",
        sha256=digest.upper(),
        make_current=True,
        progress=False,
        report=say,
    )
    assert (v.name, v.arch, v.sha256, v.size, v.source) == (
        "mine",
        "lite0",
        digest,
        len(payload),
        server.base + "/good.pth",
    )
    assert v.card["sha256_pinned"] is True
    assert v.path.read_bytes() == payload
    assert store.current().name == "mine"
    assert store.load().arch == "lite0"
    assert stray_files(store) == ["mine.pth"]
    assert "NOT verified" not in capsys.readouterr().err

    # A second download of the same name reuses the verified file instead of fetching again.
    server.requested.clear()
    assert install(store, "mine", url=server.base + "/good.pth", progress=False).name == "mine"
    assert server.requested == []


def test_download_without_pinned_hash_trusts_on_first_use(store, server, payload, capsys):
    v = install(store, server.base + "/good.pth", progress=False, report=say)
    assert v.name == "good" and v.sha256 == hashlib.sha256(payload).hexdigest()
    assert v.card["sha256_pinned"] is False
    err = capsys.readouterr().err
    assert "NOT verified against a pinned checksum" in err and v.sha256 in err
    assert store.current_name() is None  # downloading alone does not switch what serves


def test_checksum_mismatch_keeps_nothing_and_current_unchanged(store, server, payload):
    store.add_version(build_model("lite0").state_dict(), "lite0", make_current=True)
    before = stray_files(store)
    with pytest.raises(WeightsError, match="checksum mismatch.*not kept"):
        install(store, "mine", url=server.base + "/good.pth", sha256="0" * 64, make_current=True, progress=False)
    assert stray_files(store) == before == ["v1.pt"]
    assert store.current().name == "v1"
    assert [v.name for v in store.versions()] == ["v1"]


def test_short_body_is_truncated_and_removed(store, server):
    with pytest.raises(WeightsError, match="truncated"):
        install(store, "mine", url=server.base + "/short/good.pth", make_current=True, progress=False)
    assert stray_files(store) == []
    assert store.versions() == [] and store.current_name() is None


def test_http_404_is_one_clear_error(store, server):
    with pytest.raises(WeightsError, match="HTTP 404"):
        install(store, "mine", url=server.base + "/nothing-here.pth", progress=False)
    assert stray_files(store) == []


def test_unreachable_host_is_one_clear_error(store):
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WeightsError, match=f"cannot reach 127.0.0.1:{port}"):
        install(store, "mine", url=f"http://127.0.0.1:{port}/good.pth", progress=False)
    assert stray_files(store) == []


def test_a_page_that_is_not_weights_is_not_kept(store, server):
    with pytest.raises(WeightsError, match="not usable weights.*nothing was kept"):
        install(store, "mine", url=server.base + "/page.pth", progress=False)
    assert stray_files(store) == []


def test_mirror_env_replaces_the_registry_directory(store, server, monkeypatch):
    """The mirror serves a lite0 file under an official name: fetched from the mirror, then refused."""
    monkeypatch.setenv("DEXTR_WEIGHTS_MIRROR", server.base + "/models/")
    mirror = Settings.from_env().weights_mirror
    assert mirrored("https://example.org/a/b/dextr_coco.pth", mirror) == server.base + "/models/dextr_coco.pth"
    with pytest.raises(WeightsError, match="not usable weights.*do not fit"):
        install(store, "dextr_pascal-sbd", mirror=mirror, progress=False)
    assert server.requested == ["/models/dextr_pascal-sbd.pth"]
    assert stray_files(store) == []


def test_fetch_writes_atomically(tmp_path, server, payload):
    dest = tmp_path / "sub" / "file.pth"
    digest, size = fetch(server.base + "/good.pth", dest, progress=False)
    assert (digest, size) == (hashlib.sha256(payload).hexdigest(), len(payload))
    assert dest.read_bytes() == payload and sorted(p.name for p in dest.parent.iterdir()) == ["file.pth"]
    with pytest.raises(WeightsError, match="checksum mismatch"):
        fetch(server.base + "/good.pth", dest, sha256="f" * 64, progress=False)
    assert dest.read_bytes() == payload  # the old file is untouched by a failed download


def test_cli_download(weights_dir, server, payload, capsys):
    digest = hashlib.sha256(payload).hexdigest()
    assert main(["weights", "download", "mine", "--url", server.base + "/good.pth", "--sha256", digest, "--use"]) == 0
    assert "now current" in capsys.readouterr().out
    assert WeightsStore(weights_dir).current().name == "mine"
    assert main(["weights", "download", "other", "--url", server.base + "/good.pth", "--sha256", "abc"]) == 2
    assert "not a sha256" in capsys.readouterr().err
