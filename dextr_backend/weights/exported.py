"""Exported graphs of weights versions, cached in the user's store and checked before every load.

A graph is made once per weights file (its sha256), architecture and input size, and kept as
``<root>/engines/<sha256[:16]>-<arch>-<size>.onnx``. Its own sha256 goes into
``<root>/engines/index.json``, written like the manifest (``files.atomic_write`` under
``files.locked``). Every load reads the file's bytes, hashes them and hands exactly those bytes
to the runtime, so an unchecked file is never loaded. A file that fails the check (truncated,
corrupted or altered) is refused with one log line and made again from the weights.

Where the store cannot be written (a read-only volume), the graph just made is used uncached and
the log says so once: the engine still runs, and the next process exports again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from .files import atomic_write, locked
from .versions import utc_now

log = logging.getLogger(__name__)

FOLDER = "engines"
INDEX = "index.json"
LOCK = ".index.lock"
_TOLD: set[str] = set()  # what has been said once in this process


def graph_name(weights_sha256: str, arch: str, input_size: int) -> str:
    return f"{weights_sha256[:16]}-{arch}-{int(input_size)}.onnx"


class ExportedGraphs:
    """The cache folder of one weights store.

    >>> graphs = ExportedGraphs(store.root)
    >>> data = graphs.get(sha, "lite0", 384, fmt=1, make=lambda: export_onnx(net, 384))
    """

    def __init__(self, root: Path | str):
        self.folder = Path(root).expanduser() / FOLDER

    def _index(self) -> dict:
        try:
            data = json.loads((self.folder / INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        graphs = data.get("graphs") if isinstance(data, dict) else None
        return graphs if isinstance(graphs, dict) else {}

    def _checked(self, name: str, fmt: int, quiet: bool) -> bytes | None:
        """The file's bytes if the index records them (same format) and their sha256 matches;
        None where there is nothing usable. A mismatch is said once, unless ``quiet``."""
        entry = self._index().get(name)
        path = self.folder / name
        if not isinstance(entry, dict) or entry.get("format") != fmt:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() == entry.get("sha256"):
            return data
        if not quiet:
            log.warning(
                "exported graph %s does not match its recorded sha256 (corrupt or altered): refused, "
                "exporting it again from the weights",
                path,
                extra={"graph": str(path), "expected_sha256": entry.get("sha256")},
            )
        return None

    def get(self, weights_sha256: str, arch: str, input_size: int, *, fmt: int, make: Callable[[], bytes]) -> bytes:
        """The checked graph of these weights, made by ``make()`` and cached where it is missing or
        fails its check."""
        name = graph_name(weights_sha256, arch, input_size)
        data = self._checked(name, fmt, quiet=False)
        if data is not None:
            return data
        try:
            with locked(self.folder / LOCK):
                data = self._checked(name, fmt, quiet=True)  # another process may have made it meanwhile
                if data is None:
                    data = make()
                    self._store(name, data, weights_sha256, arch, input_size, fmt)
        except OSError as exc:
            data = data if data is not None else make()
            if str(self.folder) not in _TOLD:
                _TOLD.add(str(self.folder))
                log.warning("cannot cache exported graphs in %s (%s): using the graph uncached", self.folder, exc)
        return data

    def _store(self, name: str, data: bytes, weights_sha256: str, arch: str, input_size: int, fmt: int) -> None:
        """Write the graph, then its record (the caller holds the lock)."""
        atomic_write(self.folder / name, lambda fh: fh.write(data))
        graphs = self._index()
        graphs[name] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "weights_sha256": weights_sha256,
            "arch": arch,
            "input_size": int(input_size),
            "format": fmt,
            "created": utc_now(),
        }
        text = json.dumps({"format": 1, "graphs": graphs}, indent=2, sort_keys=True) + "\n"
        atomic_write(self.folder / INDEX, lambda fh: fh.write(text.encode("utf-8")))
        log.info("exported graph cached", extra={"graph": str(self.folder / name), "bytes": len(data)})


__all__ = ["ExportedGraphs", "graph_name"]
