"""Versioned weights on disk: which networks exist, which one serves, and where each came from.

Two places hold versions. The user's store (``Settings.weights_dir``, else
``~/.cache/dextr-backend/weights``) has ``manifest.json`` plus the files it names; training,
downloads and imports add to it. The shipped folder (package ``dextr_backend.shipped_weights``)
has ``index.json`` plus files that came with the code; it is read-only and may name a default.

Files and the manifest are written with ``files.atomic_write`` and the manifest's
read-modify-write runs under ``files.locked``, so a training worker and an API server sharing the
store never see half a file or lose each other's versions. Every file's sha256 is checked before
it is unpickled, so a truncated copy is refused rather than half-loaded.

A little over 300 lines: reading (cached by ``stamp``) and writing (under the lock) share the
manifest's layout and naming rules, which would otherwise have to be exposed between modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import BinaryIO, cast

import torch

from ..errors import WeightsError
from ..models import detect_architecture, get_architecture
from .files import atomic_write, locked, read_state_file, sha256_file, write_temp
from .registry import KNOWN_WEIGHTS, default_threshold
from .versions import (
    NAME_RE,
    RECORD_FIELDS,
    LoadedWeights,
    Version,
    check_fits,
    check_name,
    check_trim,
    read_version_state,
    utc_now,
    verify_file,
)

DEFAULT_ROOT = Path("~/.cache/dextr-backend/weights")
MANIFEST = "manifest.json"
INDEX = "index.json"
LOCK = ".manifest.lock"
MANIFEST_FORMAT = 1
_CHECKED: dict[str, tuple] = {}  # weights file -> (path, sha256, size, mtime) last verified by check()
GET_STARTED = (
    "run `dextr-backend weights download dextr_pascal-sbd` for the official model, "
    "or `dextr-backend weights import PATH` for a file you have"
)


def default_shipped_dir() -> Path | None:
    try:
        import dextr_backend.shipped_weights as shipped
    except ImportError:  # an install without the data package: nothing shipped
        return None
    return Path(shipped.__file__).parent


def _file_stamp(path: Path) -> tuple | None:
    """Changes whenever the file is replaced: every write renames a new inode over it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class WeightsStore:
    """Shipped plus user weights versions, the current one, and loading them safely.

    >>> store = WeightsStore.from_settings(settings)
    >>> store.add_version(model.state_dict(), "lite0", parent="v1", metrics={"iou": 0.9})
    >>> store.load().state_dict  # the current version, checksum-verified
    """

    def __init__(self, root: Path | str | None = None, shipped_dir: Path | str | None = None):
        self.root = Path(root if root is not None else DEFAULT_ROOT).expanduser()
        self.shipped_dir = Path(shipped_dir) if shipped_dir is not None else default_shipped_dir()
        self._cache: tuple | None = None  # (stamp, manifest, index, shipped versions, user versions)

    @classmethod
    def from_settings(cls, settings) -> WeightsStore:
        return cls(settings.weights_dir or None)

    # ----------------------------------------------------------------- reading
    def stamp(self) -> tuple:
        """Cheap (two ``stat`` calls): changes whenever a version is added or made current, so a
        resident predictor can poll it on every request."""
        index = None if self.shipped_dir is None else _file_stamp(self.shipped_dir / INDEX)
        return _file_stamp(self.root / MANIFEST), index

    def _read_json(self, path: Path, empty: dict) -> dict:
        if not path.exists():
            return empty
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WeightsError(f"cannot read {path} ({exc}); fix or remove it") from None
        if not isinstance(data, dict) or not isinstance(data.get("versions", []), list):
            raise WeightsError(f"{path} is not a weights index (expected an object with a 'versions' list)")
        return {**empty, **data}

    def _fresh_manifest(self) -> dict:
        return self._read_json(self.root / MANIFEST, {"format": MANIFEST_FORMAT, "current": None, "versions": []})

    def _fresh_index(self) -> dict:
        if self.shipped_dir is None:
            return {"default": None, "versions": []}
        return self._read_json(self.shipped_dir / INDEX, {"default": None, "versions": []})

    def _state(self) -> tuple:
        """Parsed manifest and index, and their versions, re-read only when ``stamp()`` changes.
        Callers must not modify what this returns; writers read afresh under the lock."""
        stamp = self.stamp()
        if self._cache is None or self._cache[0] != stamp:
            manifest, index = self._fresh_manifest(), self._fresh_index()
            shipped = (
                []
                if self.shipped_dir is None
                else [
                    Version.from_record(r, self.shipped_dir, shipped=True, origin=self.shipped_dir / INDEX)
                    for r in index["versions"]
                ]
            )
            self._cache = (stamp, manifest, index, shipped, self._user_versions(manifest))
        return self._cache

    def _user_versions(self, manifest: dict) -> list[Version]:
        origin = self.root / MANIFEST
        return [Version.from_record(r, self.root, origin=origin) for r in manifest["versions"]]

    def versions(self) -> list[Version]:
        """Shipped versions first, then the user's in the order they were added."""
        _, _, _, shipped, user = self._state()
        return shipped + user

    def find(self, name: str) -> Version | None:
        return next((v for v in self.versions() if v.name == name), None)

    def get(self, name: str) -> Version:
        found = self.find(name)
        if found is not None:
            return found
        if name in KNOWN_WEIGHTS:
            raise WeightsError(
                f"weights {name!r} are known but not downloaded yet; run `dextr-backend weights download {name}`"
            )
        known = ", ".join(v.name for v in self.versions()) or "none installed"
        raise WeightsError(
            f"unknown weights version {name!r}; installed: {known}; downloadable: {', '.join(KNOWN_WEIGHTS)}"
        )

    def current_name(self) -> str | None:
        """The name ``current()`` would return, or None when nothing is installed."""
        _, manifest, index, _, _ = self._state()
        return manifest.get("current") or index.get("default") or None

    def current(self) -> Version:
        """The user's chosen version, else the shipped default."""
        name = self.current_name()
        if name is None:
            raise WeightsError(f"no weights installed yet: {GET_STARTED}")
        return self.get(name)

    # ----------------------------------------------------------------- loading
    def verify(self, meta: Version) -> None:
        """Refuse a missing, truncated or altered file before anything unpickles it."""
        verify_file(meta)

    def check(self, version: str | None = None) -> Version:
        """Verify the file of a version (default: current) as a load would, but only once per
        change of the file (keyed by path, size and mtime), so ``/health`` can ask on every call."""
        if version is not None and self.find(version) is None and self._is_path(version):
            given = Path(version).expanduser()
            if not given.is_file():
                raise WeightsError(f"no weights file at {given}")
            meta = Version(
                name=given.name,
                arch="?",
                input_size=0,
                threshold=0.5,
                file=str(given),
                sha256=None,
                size=None,
                path=given,
            )
        else:
            meta = self.current() if version is None else self.get(version)
        path = meta.path
        try:
            stat = path.stat() if path is not None else None
        except OSError:
            stat = None
        key = (str(path), meta.sha256, stat and stat.st_size, stat and stat.st_mtime_ns)
        if _CHECKED.get(str(path)) != key:
            verify_file(meta)
            if meta.sha256 is None:  # nothing pinned: at least it must read as weights
                read_state_file(cast(Path, path))  # verify_file refused a version without a file
            _CHECKED[str(path)] = key
        return meta

    @staticmethod
    def _is_path(version: str) -> bool:
        return version.endswith((".pt", ".pth")) or "/" in version or os.sep in version

    def load(self, version: str | None = None) -> LoadedWeights:
        """Weights by version name (default: current) or by path to a ``.pt``/``.pth`` file."""
        if version is None:
            meta = self.current()
        elif self.find(version) is None and self._is_path(version):
            return self._load_path(Path(version).expanduser())
        else:
            meta = self.get(version)
        verify_file(meta)
        state = read_version_state(meta)
        return LoadedWeights(meta.name, meta.arch, meta.input_size, meta.threshold, state, meta)

    def _load_path(self, path: Path) -> LoadedWeights:
        if not path.is_file():
            raise WeightsError(f"no weights file at {path}")
        state = read_state_file(path)
        arch = detect_architecture(state)
        meta = Version(
            name=path.name,
            arch=arch,
            input_size=get_architecture(arch).input_size,
            threshold=default_threshold(arch),
            file=str(path),
            sha256=None,
            size=path.stat().st_size,
            source=str(path.resolve()),
            path=path,
        )
        return LoadedWeights(meta.name, arch, meta.input_size, meta.threshold, state, meta)

    # ----------------------------------------------------------------- writing
    def _write_manifest(self, manifest: dict) -> None:
        text = json.dumps(manifest, indent=2) + "\n"
        atomic_write(self.root / MANIFEST, lambda fh: fh.write(text.encode("utf-8")))

    @staticmethod
    def _next_name(taken: set[str]) -> str:
        numbers = [int(m.group(1)) for m in map(re.compile(r"v(\d+)$").match, taken) if m]
        n = max(numbers, default=0) + 1
        while f"v{n}" in taken:
            n += 1
        return f"v{n}"

    def _taken(self, manifest: dict) -> set[str]:
        return {v.name for v in self._state()[3]} | {v.name for v in self._user_versions(manifest)}

    def stage(self, write_fn) -> Path:
        """A private fsynced temp file in the store, for ``commit`` to move into place."""
        return write_temp(self.root, write_fn)

    def commit(self, staged: Path, suffix: str, fields: dict, name: str | None, make_current: bool) -> Version:
        """Under the lock: name the version, move the staged file into place, record it.

        ``staged`` is a private temp file in ``root``; whatever fails, it does not outlive this call.
        """
        try:
            with locked(self.root / LOCK):
                manifest = self._fresh_manifest()
                taken = self._taken(manifest)
                name = self._next_name(taken) if name is None else check_name(name)
                if name in taken:
                    raise WeightsError(f"a weights version named {name!r} already exists; choose another name")
                dest = self.root / f"{name}{suffix}"
                os.replace(staged, dest)
                try:
                    record = {"name": name, **fields, "file": dest.name, "created": utc_now()}
                    manifest["versions"].append({k: record.get(k) for k in RECORD_FIELDS})
                    if make_current:
                        manifest["current"] = name
                    self._write_manifest(manifest)
                except BaseException:
                    dest.unlink(missing_ok=True)
                    raise
        finally:
            staged.unlink(missing_ok=True)
        return self.get(name)

    def add_version(
        self,
        state_dict: dict[str, torch.Tensor],
        arch: str,
        *,
        name: str | None = None,
        parent: str | None = None,
        metrics: dict | None = None,
        card: dict | None = None,
        threshold: float | None = None,
        input_size: int | None = None,
        source: str = "training",
        make_current: bool = False,
        trim: int = 0,
        corrector: str | None = None,
    ) -> Version:
        """Save a new version (what training calls); ``name=None`` picks the next free ``vN``.
        ``input_size`` is the crop side it was trained for (default: the architecture's); ``corrector``
        how it serves corrective clicks (default: as its parent does, so retraining keeps them)."""
        spec = get_architecture(arch)
        if name is not None:
            check_name(name)
        # The default layout: a network trained channels-last still gives every loader the file it expects.
        state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        check_fits(state, arch)
        staged = self.stage(lambda fh: torch.save(state, fh))
        fields = {
            "arch": arch,
            "input_size": int(input_size or spec.input_size),
            "threshold": float(threshold if threshold is not None else default_threshold(arch)),
            "trim": check_trim(trim),
            "sha256": sha256_file(staged),
            "size": staged.stat().st_size,
            "metrics": dict(metrics or {}),
            "parent": parent,
            "source": source,
            "card": dict(card or {}),
            "corrector": corrector if corrector is not None else self._corrector_of(parent),
        }
        return self.commit(staged, ".pt", fields, name, make_current)

    def _corrector_of(self, name: str | None) -> str | None:
        found = self.find(name) if name else None
        return found.corrector if found is not None else None

    def import_file(
        self,
        path: Path | str,
        name: str | None = None,
        arch: str | None = None,
        make_current: bool = False,
        input_size: int | None = None,
        threshold: float | None = None,
        trim: int = 0,
    ) -> Version:
        """Copy a weights file into the store after checking it strictly fits its architecture.
        ``input_size`` and ``threshold`` are what the file was trained and tuned for (default: the
        architecture's)."""
        if input_size is not None and input_size < 32:
            raise WeightsError(f"input size {input_size} is too small (at least 32 pixels)")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise WeightsError(f"threshold {threshold} must lie between 0 and 1")
        trim = check_trim(trim)
        src = Path(path).expanduser()
        if not src.is_file():
            raise WeightsError(f"no weights file at {src}")
        state = read_state_file(src)
        arch = arch or detect_architecture(state)
        spec = get_architecture(arch)
        check_fits(state, arch)
        if name is None:
            name = src.stem
            if not NAME_RE.match(name) or self.find(name) is not None:
                raise WeightsError(f"cannot name the version after the file ({name!r}): give one with --name")
        check_name(name)
        digest = hashlib.sha256()

        def copy(fh: BinaryIO) -> None:
            with open(src, "rb") as inp:
                for chunk in iter(lambda: inp.read(1 << 20), b""):
                    digest.update(chunk)
                    fh.write(chunk)

        staged = self.stage(copy)
        fields = {
            "arch": arch,
            "input_size": int(input_size or spec.input_size),
            "threshold": float(threshold if threshold is not None else default_threshold(arch)),
            "trim": trim,
            "sha256": digest.hexdigest(),
            "size": staged.stat().st_size,
            "metrics": {},
            "parent": None,
            "source": str(src.resolve()),
            "card": {"imported_from": str(src.resolve())},
        }
        return self.commit(staged, ".pt", fields, name, make_current)

    def use(self, name: str) -> Version:
        """Make ``name`` the version that serves; its file must be present, intact (sha256) and fit
        its architecture, so a corrupt file never becomes current."""
        version = self.get(name)
        verify_file(version)
        check_fits(read_version_state(version), version.arch)
        with locked(self.root / LOCK):
            manifest = self._fresh_manifest()
            manifest["current"] = version.name
            self._write_manifest(manifest)
        return version

    def not_downloaded(self) -> list:
        """Registry entries with no installed version of the same name."""
        names = {v.name for v in self.versions()}
        return [k for n, k in KNOWN_WEIGHTS.items() if n not in names]


__all__ = ["DEFAULT_ROOT", "GET_STARTED", "WeightsStore", "default_shipped_dir"]
