"""Installing a published or any-URL checkpoint: streamed, hashed while it arrives, checked, then
moved into place with ``files.atomic_write`` so a half-written or wrong file never sits where a
loader could find it. The mirror comes from the caller (``Settings.weights_mirror``); messages go
to ``report`` (default: this module's logger), never to stdout.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import WeightsError
from ..models import detect_architecture, get_architecture
from .files import atomic_write, read_state_file
from .registry import KNOWN_WEIGHTS, default_threshold
from .versions import Version, check_fits, check_name, check_sha256, verify_file

log = logging.getLogger(__name__)

CHUNK = 1 << 20
DEFAULT_TIMEOUT = 60.0
MIRROR_ENV = "DEXTR_WEIGHTS_MIRROR"     # named in messages; Settings reads it


def mirrored(url: str, mirror: str = "") -> str:
    """``url`` with its directory replaced by ``mirror``, if one is given."""
    if not mirror:
        return url
    return mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1]

def _progress_bar(total: int | None, label: str, progress: bool):
    from tqdm import tqdm

    enabled = progress and sys.stderr.isatty()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                file=sys.stderr, disable=not enabled, leave=False)


def _open(url: str, timeout: float):
    host = urllib.parse.urlsplit(url).netloc or url
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"dextr-backend/{__version__}"})
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"download of {url} failed: the server answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise WeightsError(f"cannot reach {host} to download {url} ({exc.reason}); check the network, "
                           f"or point ${MIRROR_ENV} at a mirror") from None
    except (TimeoutError, socket.timeout):
        raise WeightsError(f"download of {url} timed out after {timeout:g} s") from None
    except ValueError as exc:
        raise WeightsError(f"cannot download {url!r}: not a valid URL ({exc})") from None
    except (http.client.HTTPException, OSError) as exc:
        raise WeightsError(f"cannot download {url}: {exc}") from None


def fetch(url: str, dest: Path, *, sha256: str | None = None, timeout: float = DEFAULT_TIMEOUT,
          progress: bool = True) -> tuple[str, int]:
    """Download ``url`` to ``dest``; returns ``(sha256 hex, size)``.

    ``sha256``, when given, must match or nothing is kept. Any failure removes the partial file.
    """
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    response = _open(url, timeout)
    got: dict = {}

    def write(out) -> None:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        digest, size = hashlib.sha256(), 0
        with _progress_bar(total, dest.name, progress) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except http.client.IncompleteRead as exc:
                    raise WeightsError(f"download of {url} is truncated: the server closed the connection "
                                       f"after {size + len(exc.partial)} bytes; nothing was kept, "
                                       "try again") from None
                except (TimeoutError, socket.timeout):
                    raise WeightsError(f"download of {url} stalled for {timeout:g} s after "
                                       f"{size} bytes") from None
                except OSError as exc:
                    raise WeightsError(f"download of {url} was interrupted after {size} bytes "
                                       f"({exc})") from None
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                bar.update(len(chunk))
        if total is not None and size != total:
            raise WeightsError(f"download of {url} is truncated: received {size} of {total} bytes; "
                               "nothing was kept, try again")
        if size == 0:
            raise WeightsError(f"download of {url} is empty; nothing was kept")
        got["sha256"], got["size"] = digest.hexdigest(), size
        if expected and got["sha256"] != expected:
            raise WeightsError(f"checksum mismatch for {url}: expected sha256 {expected}, got {got['sha256']}; "
                               "the file was not kept")

    with response:
        atomic_write(dest, write)
    return got["sha256"], got["size"]


def _sources(name_or_url: str, url: str | None, sha256: str | None, mirror: str):
    """``(name, urls to try in order, expected sha256 or None, registry entry or None)``."""
    known = KNOWN_WEIGHTS.get(name_or_url)
    if known is not None:
        if url:
            urls = [url]
        elif mirror:
            urls = [mirrored(known.url, mirror)]
        else:
            urls = [known.url, *known.mirrors]
        return known.name, urls, sha256 or known.sha256, known
    if "://" in name_or_url and url is None:
        return Path(name_or_url.split("?", 1)[0].rstrip("/")).stem, [name_or_url], sha256, None
    if url:
        return name_or_url, [url], sha256, None
    raise WeightsError(f"unknown weights {name_or_url!r}; known: {', '.join(KNOWN_WEIGHTS)} "
                       "(or give a URL with --url)")


def install(store, name_or_url: str, *, mirror: str = "", url: str | None = None, sha256: str | None = None,
            make_current: bool = False, progress: bool = True,
            report: Callable[[str], None] | None = None) -> Version:
    """Fetch a registry entry (or any URL) into ``store`` (a ``WeightsStore``), verify and record it.

    ``mirror`` replaces the registry's download folder (``Settings.weights_mirror``). Without a
    pinned sha256 the file is trusted on first use: its hash is recorded and ``report`` (default:
    a logged warning) says so. A pinned hash that does not match keeps nothing.
    """
    say = report or log.warning
    sha256 = check_sha256(sha256)
    name, urls, expected, known = _sources(name_or_url, url, sha256, mirror)
    check_name(name)

    existing = store.find(name)
    if existing is not None:
        if expected and existing.sha256 != expected:
            raise WeightsError(f"version {name!r} is already installed with sha256 {existing.sha256}, "
                               f"not the requested {expected}")
        verify_file(existing)
        (report or log.info)(f"{name} is already downloaded ({existing.path})")
        return store.use(name) if make_current else existing

    # Staged under a private name: the final name is only claimed under the lock in commit.
    staged = store.root / f".{name}.{os.getpid()}.download"
    errors = []
    for candidate in urls:
        try:
            digest, size = fetch(candidate, staged, sha256=expected, progress=progress)
            break
        except WeightsError as exc:
            errors.append(str(exc))
    else:
        raise WeightsError("; ".join(errors))

    try:
        try:
            state = read_state_file(staged)
            arch = known.arch if known else detect_architecture(state)
            check_fits(state, arch)
        except WeightsError as exc:
            raise WeightsError(f"downloaded {candidate} but it is not usable weights ({exc}); "
                               "nothing was kept") from None
        del state
        card = {"url": candidate, "sha256_pinned": bool(expected)}
        if known:
            card.update(description=known.description, license=known.license, registry=known.name)
        fields = {"arch": arch, "input_size": get_architecture(arch).input_size,
                  "threshold": known.threshold if known else default_threshold(arch),
                  "sha256": digest, "size": size, "metrics": dict(known.metrics) if known else {},
                  "parent": None, "source": candidate, "card": card}
        version = store.commit(staged, ".pth", fields, name, make_current)
    finally:
        staged.unlink(missing_ok=True)
    if not expected:
        say(f"warning: {name} was NOT verified against a pinned checksum (no sha256 was pinned); "
            f"trusting it on first use and recording sha256 {digest}. Pin one with --sha256 HEX.")
    return version


__all__ = ["MIRROR_ENV", "fetch", "install", "mirrored"]
