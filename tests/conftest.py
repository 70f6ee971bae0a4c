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
