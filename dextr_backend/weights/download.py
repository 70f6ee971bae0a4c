"""Streaming download of a weights file: hashed while it arrives, checked, then moved into place
in one ``os.replace`` so a half-written or wrong file never sits where a loader could find it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .. import __version__
from ..errors import WeightsError

CHUNK = 1 << 20
DEFAULT_TIMEOUT = 60.0
MIRROR_ENV = "DEXTR_WEIGHTS_MIRROR"


def mirrored(url: str, mirror: str | None = None) -> str:
    """``url`` with its directory replaced by ``$DEXTR_WEIGHTS_MIRROR`` (or ``mirror``), if one is set."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "")
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
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 else None
    response = _open(url, timeout)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o644)
        with response, os.fdopen(fd, "wb") as out:
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
            got = digest.hexdigest()
            if expected and got != expected:
                raise WeightsError(f"checksum mismatch for {url}: expected sha256 {expected}, got {got}; "
                                   "the file was not kept")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        return got, size
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["fetch", "mirrored", "MIRROR_ENV"]
