"""Hostile hosts for the fetch tests: real servers on loopback addresses that log what they receive."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: services, test_* helpers

from hostile import GarbageServer, Server  # noqa: E402


@pytest.fixture()
def servers():
    """``servers("127.0.0.2")`` starts a logging HTTP server on that loopback address; all stop after."""
    started = []

    def start(address: str = "127.0.0.1", cls=Server):
        server = cls(address)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture()
def garbage(servers):
    """A raw TCP service on 127.0.0.4 that answers anything with non-HTTP bytes."""
    return servers("127.0.0.4", GarbageServer)
