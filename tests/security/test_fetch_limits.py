"""Bad URLs, non-HTTP answers, slow and large bodies: clear 4xx errors in bounded time (issue 17,
items 6, 8, 9, 12)."""

from __future__ import annotations

import time

import pytest
import torch
from fastapi.testclient import TestClient
from hostile import LEGACY_TOKEN, fake_label_studio, png
from services import env_settings

from dextr_backend.errors import InputError, ServiceTimeout
from dextr_backend.labelstudio.client import LabelStudioClient
from dextr_backend.labelstudio.fetch import FetchError
from dextr_backend.labelstudio.images import ImageFetcher
from dextr_backend.service.cache import ImageCache


@pytest.fixture()
def ls_fetcher(servers):
    ls = fake_label_studio(servers("127.0.0.1"), LEGACY_TOKEN)
    return ls, ImageFetcher(LabelStudioClient(ls.url, LEGACY_TOKEN), ("127.0.0.2",))


@pytest.mark.parametrize(
    "url, reason",
    [
        ("/data/upload/1/a\r\nX-Injected: 1.png", "whitespace or control characters"),
        ("/data/upload/1/a\nb.png", "whitespace or control characters"),
        ("/data/upload/1/a b.png", "whitespace or control characters"),
        ("http://127.0.0.2/a b.png", "whitespace or control characters"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://127.0.0.2/x.png", "scheme 'ftp'"),
        ("gopher://127.0.0.2:6379/_FLUSHALL", "scheme 'gopher'"),
        ("http://admin:hunter2@127.0.0.2/x.png", "user names and passwords"),
        ("http://admin@127.0.0.2/x.png", "user names and passwords"),
        ("//127.0.0.3/x.png", "no scheme"),
        ("http://127.0.0.2:99999/x.png", "not a valid URL"),
        ("http://10.0.0.1/x.png", "not allowed"),
    ],
)
@pytest.mark.slow
def test_bad_urls_are_refused_with_a_clear_error(ls_fetcher, url, reason):
    ls, fetcher = ls_fetcher
    with pytest.raises(InputError, match=reason) as err:
        fetcher.get(url)
    assert "hunter2" not in str(err.value) and "\n" not in str(err.value)
    assert ls.log == []


def test_a_server_that_does_not_speak_http_is_a_clear_error(servers, garbage):
    host = servers("127.0.0.2")
    url = host.redirect("/x.png", garbage.url + "/x.png")
    with pytest.raises(InputError, match="redirect to a host that is not allowed"):
        ImageFetcher(None, (host.netloc,)).get(url)
    assert garbage.log == []
    for fetcher_url in (url, garbage.url + "/y.png"):  # allowed: connected, but not HTTP
        with pytest.raises(FetchError) as err:
            ImageFetcher(None, (host.netloc, garbage.netloc)).get(fetcher_url)
        assert str(err.value) == f"cannot fetch {fetcher_url}: the answer was not HTTP"
    assert garbage.log and garbage.leaks() == []


@pytest.mark.slow
def test_a_trickling_server_is_cut_off_at_the_total_deadline(servers):
    host = servers("127.0.0.2")
    url = host.trickle("/slow.png", total=100, every=0.5)
    fetcher = ImageFetcher(None, (host.netloc,), timeout=2.0)
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out after 2 s"):
        fetcher.get(url)
    assert time.monotonic() - started < 3.0

    started = time.monotonic()  # the caller's deadline is earlier: the request ran out
    with pytest.raises(ServiceTimeout, match="timed out after 1 s"):
        ImageFetcher(None, (host.netloc,), timeout=20.0).get(url, deadline=time.monotonic() + 1.0)
    assert time.monotonic() - started < 2.2


@pytest.mark.slow
def test_a_silent_server_and_a_slow_redirect_chain_share_one_deadline(servers):
    host = servers("127.0.0.2")
    url = host.stall("/never.png", seconds=10)
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out after 1.5 s"):
        ImageFetcher(None, (host.netloc,), timeout=1.5).get(url)
    assert time.monotonic() - started < 2.5

    def slow_redirect(handler, _):
        time.sleep(0.6)
        handler.answer(302, b"", {"Location": "/hop"})

    host.routes["/hop"] = slow_redirect  # each hop well inside a per-request timeout
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out after 1.5 s"):
        ImageFetcher(None, (host.netloc,), timeout=1.5).get(host.url + "/hop")
    assert time.monotonic() - started < 2.5


def test_too_large_bodies_are_refused_not_truncated(servers):
    host = servers("127.0.0.2")
    declared = host.file("/big.png", b"z" * 5000)
    undeclared = host.unbounded("/stream.png", 5000)
    fetcher = ImageFetcher(None, (host.netloc,), max_bytes=1000)
    for url in (declared, undeclared):
        with pytest.raises(FetchError, match="larger than 1000 bytes"):
            fetcher.get(url)
    assert ImageFetcher(None, (host.netloc,), max_bytes=len(png(7))).get(host.file("/ok.png", png(7))).shape


def test_the_image_cache_keeps_label_studios_and_tokens_apart(servers):
    one = fake_label_studio(servers("127.0.0.1"), LEGACY_TOKEN)
    two = fake_label_studio(servers("127.0.0.2"), LEGACY_TOKEN)
    one.file("/data/upload/1/same.png", png(10))
    two.file("/data/upload/1/same.png", png(20))
    cache = ImageCache()
    first = ImageFetcher(LabelStudioClient(one.url, LEGACY_TOKEN), cache=cache)
    second = ImageFetcher(LabelStudioClient(two.url, LEGACY_TOKEN), cache=cache)
    assert (first.get("/data/upload/1/same.png") == 10).all()
    assert (second.get("/data/upload/1/same.png") == 20).all()
    assert (first.get("/data/upload/1/same.png") == 10).all() and len(cache) == 2

    two.token = "another-token-123456"  # same Label Studio, another token: its own entry
    third = ImageFetcher(LabelStudioClient(two.url, two.token), cache=cache)
    assert (third.get("/data/upload/1/same.png") == 20).all() and len(cache) == 3
    assert not any(t in key for key in cache._items for t in (LEGACY_TOKEN, two.token))
    with pytest.raises(InputError, match="not allowed"):  # a cached picture is no way around the rules
        ImageFetcher(None, cache=cache).get(two.url + "/data/upload/1/same.png")


def test_bad_urls_are_422_through_the_server(servers, garbage, tmp_path, monkeypatch):
    from test_labelstudio_backend import CLICKS, CONFIG

    from dextr_backend.labelstudio_api.app import create_app
    from dextr_backend.models import build_model
    from dextr_backend.weights.store import WeightsStore

    torch.manual_seed(0)
    monkeypatch.setenv("DEXTR_WEIGHTS_DIR", str(tmp_path / "store"))
    WeightsStore(tmp_path / "store").add_version(
        build_model("lite0").state_dict(), "lite0", name="s", make_current=True
    )
    host = servers("127.0.0.2")
    host.file("/ok.png", png(50, (120, 160)))
    to_garbage = host.redirect("/garbage.png", garbage.url + "/x")
    cases = [
        (host.url + "/o\r\nk.png", "whitespace or control characters"),
        (host.url + "/o k.png", "whitespace or control characters"),
        (to_garbage, "the answer was not HTTP"),
        (host.redirect("/away.png", "http://127.0.0.1:1/x"), "redirect to a host that is not allowed"),
    ]
    settings = env_settings(allowed_hosts=(host.netloc, garbage.netloc), device="cpu")
    with TestClient(create_app(settings)) as client:
        for url, message in cases:
            body = {
                "tasks": [{"id": 1, "data": {"image": url}}],
                "label_config": CONFIG,
                "params": {"context": {"result": CLICKS}},
            }
            r = client.post("/predict", json=body)
            assert r.status_code == 422 and message in r.json()["detail"], (url, r.status_code, r.text)
