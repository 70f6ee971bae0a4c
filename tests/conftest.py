"""Shared fixtures. Real data lives in ../shared/data (never committed); tests that need it skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores on CI: keep each test process to one intra-op thread so parallel work stays fair.
torch.set_num_threads(int(os.environ.get("DEXTR_TEST_THREADS", "1")))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DEXTR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$DEXTR_SHARED_DATA``); skips the test where it is absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (set DEXTR_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture()
def weights_dir(tmp_path, monkeypatch) -> Path:
    """A private, empty user weights store for the test."""
    d = tmp_path / "weights-store"
    monkeypatch.setenv("DEXTR_WEIGHTS_DIR", str(d))
    return d


@pytest.fixture()
def random_store(weights_dir) -> Path:
    """A user store whose current version ``served`` is a small random ``lite0``: the service's
    plumbing under test, not its masks."""
    from dextr_backend.models import build_model
    from dextr_backend.weights.store import WeightsStore

    torch.manual_seed(0)
    WeightsStore(weights_dir).add_version(build_model("lite0").state_dict(), "lite0", name="served", make_current=True)
    return weights_dir


@pytest.fixture()
def worker_env(random_store, image_server) -> dict:
    """The environment of a real worker or server on ``random_store``, CPU, one thread, pictures
    from the test image server."""
    return {
        "DEXTR_WEIGHTS_DIR": str(random_store),
        "DEXTR_ALLOWED_HOSTS": image_server,
        "DEXTR_DEVICE": "cpu",
        "DEXTR_THREADS": "1",
    }


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio server (pip-installed once into a cached venv; see labelstudio_server.py).

    Skips where it cannot be installed, unless ``DEXTR_REQUIRE_LABEL_STUDIO=1`` (set by CI)."""
    from labelstudio_server import LabelStudioUnavailable, start_label_studio

    try:
        server = start_label_studio(tmp_path_factory.mktemp("ls"))
    except LabelStudioUnavailable as exc:
        if os.environ.get("DEXTR_REQUIRE_LABEL_STUDIO") == "1":
            raise
        pytest.skip(f"Label Studio unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """``REDIS_URL`` if set, else a private ``redis-server`` on a free port (stoppable by tests)."""
    from services import RedisServer

    url = os.environ.get("REDIS_URL")
    if url:
        yield RedisServer.external(url)
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except FileNotFoundError:
        pytest.skip("redis-server not installed and REDIS_URL not set (apt-get install redis-server)")
    yield server
    server.stop()


@pytest.fixture()
def private_redis(tmp_path):
    """A redis-server of this test's own, for tests that stop and restart it."""
    from services import RedisServer

    server = RedisServer(tmp_path / "redis")
    try:
        server.start()
    except FileNotFoundError:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def image_server(tmp_path_factory):
    """A real HTTP server on 127.0.0.1 holding test pictures; yields ``host:port``.

    ``ellipse.png`` 160x120 with a red ellipse centred at (80, 60), radii (50, 40);
    ``corrupt.png`` is not an image; ``huge.png`` is small on disk but 10000x9000 pixels."""
    import cv2
    import numpy as np
    from services import serve_folder

    root = tmp_path_factory.mktemp("images")
    img = np.full((120, 160, 3), 30, np.uint8)
    cv2.ellipse(img, (80, 60), (50, 40), 0, 0, 360, (40, 40, 230), -1)
    cv2.imwrite(str(root / "ellipse.png"), img)
    (root / "corrupt.png").write_bytes(b"\x89PNG not really")
    cv2.imwrite(str(root / "huge.png"), np.zeros((10000, 9000), np.uint8))

    yield serve_folder(root)
