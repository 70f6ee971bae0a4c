"""Credentials and the host allow-list hold across redirects (issue 17, items 1 and 2).

Label Studio is a fake on 127.0.0.1; other hosts are 127.0.0.2, 127.0.0.3, ... (all loopback on
Linux, each a different host for the allow-list). Every server logs what it receives.
"""

from __future__ import annotations

import pytest
from hostile import ACCESS_TOKEN, LEGACY_TOKEN, PAT, SECRETS, fake_label_studio, png
from services import free_port

from dextr_backend.errors import InputError
from dextr_backend.labelstudio.client import LabelStudioClient, LabelStudioError
from dextr_backend.labelstudio.fetch import MAX_REDIRECTS, FetchError, check_url, origin
from dextr_backend.labelstudio.images import ImageFetcher

REFUSED = "redirect to a host that is not allowed"
TOKENS = {"legacy": LEGACY_TOKEN, "pat": PAT}


def label_studio(servers, kind="legacy"):
    ls = fake_label_studio(servers("127.0.0.1"), TOKENS[kind], pat=kind == "pat")
    return ls, LabelStudioClient(ls.url, TOKENS[kind])


def sent_credentials(ls, kind):
    want = f"Bearer {ACCESS_TOKEN}" if kind == "pat" else f"Token {LEGACY_TOKEN}"
    return [r["line"] for r in ls.log if r["authorization"] == want]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["legacy", "pat"])
@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_off_label_studio_to_a_host_not_allowed_is_refused_before_connecting(servers, kind, status):
    ls, client = label_studio(servers, kind)
    other = servers("127.0.0.2")
    other.file("/img.png", png(200))
    ls.redirect("/data/upload/1/img.png", other.url + "/img.png", status)
    with pytest.raises(InputError, match=REFUSED) as err:
        ImageFetcher(client).get("/data/upload/1/img.png")
    assert other.log == []  # refused before any connection
    assert sent_credentials(ls, kind)  # the first hop, on Label Studio, had them
    assert other.netloc not in str(err.value) and str(other.port) not in str(err.value)


@pytest.mark.parametrize("kind", ["legacy", "pat"])
@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_off_label_studio_to_an_allowed_host_drops_the_credentials(servers, kind, status):
    ls, client = label_studio(servers, kind)
    other = servers("127.0.0.2")
    other.file("/img.png", png(200))
    ls.redirect("/data/upload/1/img.png", other.url + "/img.png", status)
    image = ImageFetcher(client, (other.netloc,)).get("/data/upload/1/img.png")
    assert image.shape == (12, 16, 3) and (image == 200).all()
    assert len(other.log) == 1 and other.leaks() == []
    assert sent_credentials(ls, kind)


def test_a_pat_is_refreshed_at_label_studio_only_and_the_refresh_never_follows_a_redirect(servers):
    ls = fake_label_studio(servers("127.0.0.1"), PAT, pat=True)
    other = servers("127.0.0.2")
    client = LabelStudioClient(ls.url, PAT, allowed_hosts=(other.netloc,))
    assert client.auth_header() == {"Authorization": f"Bearer {ACCESS_TOKEN}"}
    assert [r["line"] for r in ls.log] == ["POST /api/token/refresh/ HTTP/1.1"]

    moved = fake_label_studio(servers("127.0.0.3"), PAT, pat=True)
    moved.redirect("/api/token/refresh/", other.url + "/api/token/refresh/", 307)  # 307 re-sends the body
    with pytest.raises(LabelStudioError, match=REFUSED):
        LabelStudioClient(moved.url, PAT, allowed_hosts=(other.netloc,)).auth_header()
    assert other.log == []


def test_credentials_are_not_attached_again_when_a_redirect_comes_back_to_label_studio(servers):
    """The rule: credentials only while the caller's URL and every hop so far stayed on Label
    Studio's origin. A host that bounces back to Label Studio gets no credentialed request made
    for it (it could choose the path: an API call, a delete)."""
    ls, client = label_studio(servers)
    other = servers("127.0.0.2")
    ls.file("/data/upload/1/img.png", png(90))
    ls.redirect("/data/upload/1/bounce.png", other.url + "/back.png")
    other.redirect("/back.png", ls.url + "/data/upload/1/img.png")
    fetcher = ImageFetcher(client, (other.netloc,))

    with pytest.raises(FetchError, match="HTTP 401"):  # LS -> other -> LS: the last hop goes bare
        fetcher.get("/data/upload/1/bounce.png")
    assert [r["authorization"] is not None for r in ls.log] == [True, False]
    with pytest.raises(FetchError, match="HTTP 401"):  # other -> LS: never credentials
        fetcher.get(other.url + "/back.png")
    assert ls.log[-1]["authorization"] is None
    assert other.leaks() == []
    assert (fetcher.get("/data/upload/1/img.png") == 90).all()  # straight to LS: with the token


@pytest.mark.slow
@pytest.mark.parametrize("target", ["other host", "closed port", "internal service"])
def test_an_allowed_host_cannot_redirect_anywhere_else_and_the_error_says_nothing_about_it(servers, target):
    allowed = servers("127.0.0.2")
    internal = servers("127.0.0.1")  # e.g. a metrics endpoint or a database's HTTP port
    internal.file("/secret", b"internal data")
    elsewhere = servers("127.0.0.3")
    closed = free_port()
    location = {
        "other host": elsewhere.url + "/x.png",
        "closed port": f"http://127.0.0.1:{closed}/x.png",
        "internal service": internal.url + "/secret",
    }[target]
    url = allowed.redirect("/x.png", location)
    with pytest.raises(InputError) as err:
        ImageFetcher(None, (allowed.netloc,)).get(url)
    assert str(err.value) == f"cannot fetch {url}: {REFUSED}"  # the same words whatever is behind
    assert internal.log == [] and elsewhere.log == []


def test_redirect_loops_and_long_chains_are_refused(servers):
    host = servers("127.0.0.2")
    host.redirect("/a", host.url + "/b")
    host.redirect("/b", "/a")  # relative Location, resolved against the hop
    fetcher = ImageFetcher(None, (host.netloc,))
    with pytest.raises(InputError, match=f"too many redirects \\(more than {MAX_REDIRECTS}\\)"):
        fetcher.get(host.url + "/a")
    assert len(host.log) == MAX_REDIRECTS + 1

    host.file("/end.png", png(5))
    for i in range(MAX_REDIRECTS):
        host.redirect(f"/hop{i}", f"/hop{i + 1}" if i + 1 < MAX_REDIRECTS else "/end.png")
    assert (fetcher.get(host.url + "/hop0") == 5).all()  # exactly the limit: fine
    host.redirect("/hop-1", "/hop0")
    with pytest.raises(InputError, match="too many redirects"):
        fetcher.get(host.url + "/hop-1")


def own(client: LabelStudioClient, url: str) -> bool:
    """Whether the fetch rules treat ``url`` as Label Studio's origin (where its token may go)."""
    try:
        return origin(check_url(url, base=client.url)) == client.origin
    except InputError:
        return False


def test_same_host_on_another_port_or_scheme_is_another_origin(servers):
    ls, client = label_studio(servers)
    twin = servers("127.0.0.1")  # same host, other port
    twin.file("/img.png", png(60))
    assert own(client, "/data/x.png") and own(client, ls.url.upper() + "/data/x.png")
    assert not own(client, twin.url + "/img.png")
    assert not own(client, f"https://127.0.0.1:{ls.port}/data/x.png")
    assert own(LabelStudioClient("http://ls.example"), "http://LS.example:80/x")
    assert not own(LabelStudioClient("http://ls.example"), "https://ls.example/x")
    assert own(LabelStudioClient("https://ls.example:443/"), "https://ls.example/x")

    with pytest.raises(InputError, match="not allowed"):
        ImageFetcher(client).get(twin.url + "/img.png")
    assert twin.log == []
    ls.redirect("/data/upload/1/port.png", twin.url + "/img.png")
    ls.redirect("/data/upload/1/scheme.png", f"https://127.0.0.1:{ls.port}/data/upload/1/img.png")
    for path in ("/data/upload/1/port.png", "/data/upload/1/scheme.png"):
        with pytest.raises(InputError, match=REFUSED):
            ImageFetcher(client).get(path)
    assert twin.log == []
    assert (ImageFetcher(client, (twin.netloc,)).get("/data/upload/1/port.png") == 60).all()
    assert twin.leaks() == []


def test_cookies_set_by_label_studio_are_never_sent_anywhere(servers):
    ls, client = label_studio(servers)
    twin = servers("127.0.0.1")  # cookies know hosts, not ports
    ls.file("/data/upload/1/a.png", png(1), headers={"Set-Cookie": f"sessionid={LEGACY_TOKEN}; Path=/"})
    twin.file("/b.png", png(2))
    fetcher = ImageFetcher(client, (twin.netloc,))
    fetcher.get("/data/upload/1/a.png")
    fetcher.get(twin.url + "/b.png")
    assert twin.log and twin.leaks() == []
    assert all(r["cookie"] is None for r in ls.log)


def test_an_allowed_host_entry_with_a_port_allows_that_port_only(servers):
    host = servers("127.0.0.2")
    host.file("/a.png", png(3))
    other_port = servers("127.0.0.2")
    other_port.file("/a.png", png(4))
    fetcher = ImageFetcher(None, (host.netloc,))
    assert (fetcher.get(host.url + "/a.png") == 3).all()
    with pytest.raises(InputError, match="not allowed"):
        fetcher.get(other_port.url + "/a.png")
    assert (ImageFetcher(None, ("127.0.0.2",)).get(other_port.url + "/a.png") == 4).all()  # host: any port
    assert other_port.leaks() == [] and host.leaks() == []


def test_no_secret_in_any_error(servers):
    ls, client = label_studio(servers, "pat")
    ls.redirect("/data/upload/1/x.png", f"http://127.0.0.9:{free_port()}/x.png")
    errors = []
    for url in ("/data/upload/1/x.png", "/data/upload/1/missing.png", f"http://u:{LEGACY_TOKEN}@127.0.0.1/x"):
        with pytest.raises(InputError) as err:
            ImageFetcher(client).get(url)
        errors.append(str(err.value))
    assert not any(s in e for e in errors for s in SECRETS), errors
    assert "HTTP 404" in errors[1] and "***" in errors[2]
