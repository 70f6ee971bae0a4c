"""Versioned weights on disk: which networks exist, which one serves, and where each came from.

Two places hold versions. The user's store (``$DEXTR_WEIGHTS_DIR``, else
``~/.cache/dextr-backend/weights``) has ``manifest.json`` plus the files it names; training,
downloads and imports add to it. The shipped folder (package ``dextr_backend.shipped_weights``)
has ``index.json`` plus files that came with the code; it is read-only and may name a default.

Every file is written to a temporary name in its final directory, fsynced, then ``os.replace``d,
and the manifest is rewritten the same way under an ``fcntl`` lock, so a training worker and an
API server sharing the store never see half a file or lose each other's versions. Every file's
sha256 is checked before it is unpickled, so a truncated copy is refused rather than half-loaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import torch

from ..errors import WeightsError
from ..models import build_model, detect_architecture, get_architecture, load_state
from . import download as _download
from .registry import KNOWN_WEIGHTS, default_threshold

ROOT_ENV = "DEXTR_WEIGHTS_DIR"
MANIFEST = "manifest.json"
INDEX = "index.json"
LOCK = ".manifest.lock"
MANIFEST_FORMAT = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RECORD_FIELDS = ("name", "arch", "input_size", "threshold", "trim", "file", "sha256", "size", "metrics",
                 "parent", "created", "source", "card")
_CHECKED: dict[str, tuple] = {}   # weights file -> (path, sha256, size, mtime) last verified by check()
GET_STARTED = ("run `dextr-backend weights download dextr_pascal-sbd` for the official model, "
               "or `dextr-backend weights import PATH` for a file you have")


def check_trim(trim: int, error: type[Exception] = WeightsError) -> int:
    """A boundary trim is a whole number of pixels, 0 or more."""
    if int(trim) != trim or trim < 0:
        raise error(f"trim {trim} must be a whole number of pixels, 0 or more")
    return int(trim)


def default_root() -> Path:
    env = os.environ.get(ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dextr-backend" / "weights"


def default_shipped_dir() -> Path | None:
    try:
        import dextr_backend.shipped_weights as shipped
    except ImportError:  # an install without the data package: nothing shipped
        return None
    return Path(shipped.__file__).parent


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(value: str | None) -> str | None:
    """Normalise a user-given hex digest; refuse anything that is not 64 hex digits."""
    if value is None:
        return None
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise WeightsError(f"{value!r} is not a sha256 digest (64 hex digits)")
    return value


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise WeightsError(f"invalid version name {name!r}: use up to 64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    return name


@dataclass(frozen=True)
class Version:
    """One weights version: the record in the manifest/index plus where its file lies."""

    name: str
    arch: str
    input_size: int
    threshold: float
    file: str
    sha256: str | None
    size: int | None
    metrics: dict = field(default_factory=dict, hash=False)
    parent: str | None = None
    created: str | None = None
    source: str | None = None
    card: dict = field(default_factory=dict, hash=False)
    path: Path | None = field(default=None, compare=False)
    shipped: bool = field(default=False, compare=False)
    trim: int = 0      # pixels eroded off each mask's boundary after thresholding (PostProcess.trim)

    @classmethod
    def from_record(cls, record: dict, directory: Path, *, shipped: bool = False, origin: Path) -> "Version":
        try:
            card = record.get("card") or {}
            if isinstance(card, str):           # a shipped model card kept as a markdown file
                card = {"file": card}
            return cls(name=str(record["name"]), arch=str(record["arch"]),
                       input_size=int(record["input_size"]), threshold=float(record["threshold"]),
                       file=str(record["file"]), sha256=record.get("sha256"), size=record.get("size"),
                       metrics=dict(record.get("metrics") or {}), parent=record.get("parent"),
                       created=record.get("created"), source=record.get("source"), card=dict(card),
                       path=directory / str(record["file"]), shipped=shipped,
                       trim=check_trim(record.get("trim") or 0, ValueError))
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{origin} has a malformed version record ({exc!r}); fix or remove it") from None

    def to_record(self) -> dict:
        return {k: getattr(self, k) for k in RECORD_FIELDS}


@dataclass
class LoadedWeights:
    version: str
    arch: str
    input_size: int
    threshold: float
    state_dict: dict[str, torch.Tensor]
    meta: Version


def load_tensors(path: Path, what: str = "file"):
    """``torch.load(weights_only=True)`` with one clear line for every way a file can be wrong.

    Only tensors and plain Python data come back; a file holding other objects is refused, since
    unpickling them could run code. torch's own messages are not passed on: some end in a bare
    number, and one advises loading with ``weights_only=False``, which is exactly what must not happen.
    """
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise WeightsError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise WeightsError(f"{what} {path} is a folder, not a file") from None
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean the same here
        if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
            reason = ("it holds Python objects besides tensors, which are refused because loading them could "
                      "run code")
        else:
            reason = "not a PyTorch file, or truncated or corrupt"
        raise WeightsError(f"cannot read {what} {path}: {reason}") from None


def read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only (``weights_only``): a weights file must never be able to run code.

    Besides a plain state dict (or one under ``state_dict``) this reads a training run's
    ``checkpoint.pt`` as the weights the run validates: its moving average where it keeps one,
    else its model. So the last epoch of a run that was stopped can be imported or shipped.
    """
    obj = load_tensors(path, "weights file")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "optimizer" in obj:
        obj = obj["ema"] if isinstance(obj.get("ema"), dict) else obj["model"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise WeightsError(f"weights file {path} holds no state dict (expected a dict of tensors, "
                           "a dict with a 'state_dict' key, or a training run's checkpoint.pt)")
    return obj


def check_fits(state: dict[str, torch.Tensor], arch: str) -> None:
    """Strictly fit a state dict to ``arch``, on the meta device so no memory is spent."""
    with torch.device("meta"):
        model = build_model(arch)
    load_state(model, {k: v.to("meta") for k, v in state.items()})


def _write_temp(directory: Path, write: Callable[[BinaryIO], None], stem: str = "weights") -> Path:
    """Write via ``write(fileobj)`` to a fsynced temp file in ``directory``; the caller renames it."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from a server running as another user
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(dest: Path, write: Callable[[BinaryIO], None]) -> None:
    tmp = _write_temp(dest.parent, write, dest.name)
    try:
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


class WeightsStore:
    """Shipped plus user weights versions, the current one, and loading them safely.

    >>> store = WeightsStore()
    >>> store.add_version(model.state_dict(), "lite0", parent="v1", metrics={"iou": 0.9})
    >>> store.load().state_dict  # the current version, checksum-verified
    """

    def __init__(self, root: Path | str | None = None, shipped_dir: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.shipped_dir = Path(shipped_dir) if shipped_dir is not None else default_shipped_dir()

    @classmethod
    def from_settings(cls, settings) -> "WeightsStore":  # TEMPORARY until the lower-layer merge
        return cls(settings.weights_dir or None)

    def stamp(self):  # TEMPORARY until the lower-layer merge
        out = []
        for path in (self.root / MANIFEST, (self.shipped_dir / INDEX) if self.shipped_dir else None):
            try:
                st = path.stat() if path else None
                out.append((st.st_mtime_ns, st.st_size) if st else None)
            except OSError:
                out.append(None)
        return tuple(out)

    # ----------------------------------------------------------------- reading
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

    def _manifest(self) -> dict:
        return self._read_json(self.root / MANIFEST, {"format": MANIFEST_FORMAT, "current": None, "versions": []})

    def _index(self) -> dict:
        if self.shipped_dir is None:
            return {"default": None, "versions": []}
        return self._read_json(self.shipped_dir / INDEX, {"default": None, "versions": []})

    def _shipped_versions(self) -> list[Version]:
        if self.shipped_dir is None:
            return []
        origin = self.shipped_dir / INDEX
        return [Version.from_record(r, self.shipped_dir, shipped=True, origin=origin)
                for r in self._index()["versions"]]

    def _user_versions(self, manifest: dict | None = None) -> list[Version]:
        manifest = self._manifest() if manifest is None else manifest
        origin = self.root / MANIFEST
        return [Version.from_record(r, self.root, origin=origin) for r in manifest["versions"]]

    def versions(self) -> list[Version]:
        """Shipped versions first, then the user's in the order they were added."""
        return self._shipped_versions() + self._user_versions()

    def _find(self, name: str) -> Version | None:
        return next((v for v in self.versions() if v.name == name), None)

    def get(self, name: str) -> Version:
        found = self._find(name)
        if found is not None:
            return found
        if name in KNOWN_WEIGHTS:
            raise WeightsError(f"weights {name!r} are known but not downloaded yet; "
                               f"run `dextr-backend weights download {name}`")
        known = ", ".join(v.name for v in self.versions()) or "none installed"
        raise WeightsError(f"unknown weights version {name!r}; installed: {known}; "
                           f"downloadable: {', '.join(KNOWN_WEIGHTS)}")

    def current_name(self) -> str | None:
        """The name ``current()`` would return, or None when nothing is installed."""
        return self._manifest().get("current") or self._index().get("default") or None

    def current(self) -> Version:
        """The user's chosen version, else the shipped default."""
        name = self.current_name()
        if name is None:
            raise WeightsError(f"no weights installed yet: {GET_STARTED}")
        return self.get(name)

    # ----------------------------------------------------------------- loading
    def verify(self, meta: Version) -> None:
        """Refuse a missing, truncated or altered file before anything unpickles it."""
        path = meta.path
        if meta.shipped:
            redo = "reinstall dextr-backend"
        elif meta.name in KNOWN_WEIGHTS:
            redo = f"re-run `dextr-backend weights download {meta.name}`"
        else:
            redo = "import or train it again"
        if path is None or not path.is_file():
            raise WeightsError(f"weights file {path} of version {meta.name!r} is missing; {redo}, "
                               "or pick another with `dextr-backend weights use VERSION`")
        if meta.sha256 is None:
            return
        actual_size = path.stat().st_size
        if meta.size is not None and actual_size != meta.size:
            raise WeightsError(f"weights file {path} of version {meta.name!r} is truncated or corrupt "
                               f"({actual_size} bytes, expected {meta.size}) and was not loaded; {redo}")
        actual = sha256_file(path)
        if actual != meta.sha256:
            raise WeightsError(f"weights file {path} of version {meta.name!r} is corrupt (sha256 {actual[:12]}..., "
                               f"expected {meta.sha256[:12]}...) and was not loaded; {redo}")

    def check(self, version: str | None = None) -> Version:
        """Verify the file of a version (default: current) as a load would, but only once per
        change of the file (keyed by path, size and mtime), so ``/health`` can ask on every call."""
        if version is not None and self._find(version) is None and self._is_path(version):
            path = Path(version).expanduser()
            if not path.is_file():
                raise WeightsError(f"no weights file at {path}")
            meta = Version(name=path.name, arch="?", input_size=0, threshold=0.5, file=str(path), sha256=None,
                           size=None, path=path)
        else:
            meta = self.current() if version is None else self.get(version)
        path = meta.path
        try:
            stat = path.stat() if path is not None else None
        except OSError:
            stat = None
        key = (str(path), meta.sha256, stat and stat.st_size, stat and stat.st_mtime_ns)
        if _CHECKED.get(str(path)) != key:
            self.verify(meta)
            if meta.sha256 is None:        # nothing pinned: at least it must read as weights
                read_state_file(path)
            _CHECKED[str(path)] = key
        return meta

    @staticmethod
    def _is_path(version: str) -> bool:
        return version.endswith((".pt", ".pth")) or "/" in version or os.sep in version

    def load(self, version: str | None = None) -> LoadedWeights:
        """Weights by version name (default: current) or by path to a ``.pt``/``.pth`` file."""
        if version is None:
            meta = self.current()
        elif self._find(version) is None and self._is_path(version):
            return self._load_path(Path(version).expanduser())
        else:
            meta = self.get(version)
        self.verify(meta)
        state = read_state_file(meta.path)
        return LoadedWeights(meta.name, meta.arch, meta.input_size, meta.threshold, state, meta)

    def _load_path(self, path: Path) -> LoadedWeights:
        if not path.is_file():
            raise WeightsError(f"no weights file at {path}")
        state = read_state_file(path)
        arch = detect_architecture(state)
        meta = Version(name=path.name, arch=arch, input_size=get_architecture(arch).input_size,
                       threshold=default_threshold(arch), file=str(path), sha256=None,
                       size=path.stat().st_size, source=str(path.resolve()), path=path)
        return LoadedWeights(meta.name, arch, meta.input_size, meta.threshold, state, meta)

    # ----------------------------------------------------------------- writing
    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Exclusive across processes for the manifest's read-modify-write."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _write_manifest(self, manifest: dict) -> None:
        text = json.dumps(manifest, indent=2) + "\n"
        _atomic_write(self.root / MANIFEST, lambda fh: fh.write(text.encode("utf-8")))

    @staticmethod
    def _next_name(taken: set[str]) -> str:
        numbers = [int(m.group(1)) for m in map(re.compile(r"v(\d+)$").match, taken) if m]
        n = max(numbers, default=0) + 1
        while f"v{n}" in taken:
            n += 1
        return f"v{n}"

    def _taken(self, manifest: dict) -> set[str]:
        return {v.name for v in self._shipped_versions()} | {v.name for v in self._user_versions(manifest)}

    def _commit(self, staged: Path, suffix: str, fields: dict, name: str | None, make_current: bool) -> Version:
        """Under the lock: name the version, move the staged file into place, record it.

        ``staged`` is a private temp file in ``root``; whatever fails, it does not outlive this call.
        """
        try:
            with self._lock():
                manifest = self._manifest()
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

    def add_version(self, state_dict: dict[str, torch.Tensor], arch: str, *, name: str | None = None,
                    parent: str | None = None, metrics: dict | None = None, card: dict | None = None,
                    threshold: float | None = None, input_size: int | None = None, source: str = "training",
                    make_current: bool = False, trim: int = 0) -> Version:
        """Save a new version (what training calls); ``name=None`` picks the next free ``vN``.
        ``input_size`` is the crop side it was trained for (default: the architecture's)."""
        spec = get_architecture(arch)
        if name is not None:
            check_name(name)
        state = {k: v.detach().cpu() for k, v in state_dict.items()}
        check_fits(state, arch)
        staged = _write_temp(self.root, lambda fh: torch.save(state, fh))
        fields = {"arch": arch, "input_size": int(input_size or spec.input_size),
                  "threshold": float(threshold if threshold is not None else default_threshold(arch)),
                  "trim": check_trim(trim), "sha256": sha256_file(staged), "size": staged.stat().st_size,
                  "metrics": dict(metrics or {}), "parent": parent, "source": source, "card": dict(card or {})}
        return self._commit(staged, ".pt", fields, name, make_current)

    def import_file(self, path: Path | str, name: str | None = None, arch: str | None = None,
                    make_current: bool = False, input_size: int | None = None,
                    threshold: float | None = None, trim: int = 0) -> Version:
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
            if not NAME_RE.match(name) or self._find(name) is not None:
                raise WeightsError(f"cannot name the version after the file ({name!r}): give one with --name")
        check_name(name)
        digest = hashlib.sha256()

        def copy(fh: BinaryIO) -> None:
            with open(src, "rb") as inp:
                for chunk in iter(lambda: inp.read(1 << 20), b""):
                    digest.update(chunk)
                    fh.write(chunk)

        staged = _write_temp(self.root, copy)
        fields = {"arch": arch, "input_size": int(input_size or spec.input_size),
                  "threshold": float(threshold if threshold is not None else default_threshold(arch)),
                  "trim": trim, "sha256": digest.hexdigest(), "size": staged.stat().st_size, "metrics": {},
                  "parent": None, "source": str(src.resolve()),
                  "card": {"imported_from": str(src.resolve())}}
        return self._commit(staged, ".pt", fields, name, make_current)

    def use(self, name: str) -> Version:
        """Make ``name`` the version that serves; its file must be present, intact (sha256) and fit
        its architecture, so a corrupt file never becomes current."""
        version = self.get(name)
        self.verify(version)
        check_fits(read_state_file(version.path), version.arch)
        with self._lock():
            manifest = self._manifest()
            manifest["current"] = version.name
            self._write_manifest(manifest)
        return version

    def download(self, name_or_url: str, *, url: str | None = None, sha256: str | None = None,
                 make_current: bool = False, progress: bool = True) -> Version:
        """Fetch a registry entry (or any URL) into the store, verify and record it.

        Without a pinned sha256 the file is trusted on first use: its hash is recorded and a
        warning says so. A pinned hash that does not match keeps nothing.
        """
        sha256 = check_sha256(sha256)
        known = KNOWN_WEIGHTS.get(name_or_url)
        if known is not None:
            name = known.name
            if url:
                urls = [url]
            elif os.environ.get(_download.MIRROR_ENV):
                urls = [_download.mirrored(known.url)]
            else:
                urls = [known.url, *known.mirrors]
            expected = sha256 or known.sha256
        elif "://" in name_or_url and url is None:
            urls = [name_or_url]
            name = Path(name_or_url.split("?", 1)[0].rstrip("/")).stem
            expected = sha256
        elif url:
            name, urls, expected = name_or_url, [url], sha256
        else:
            raise WeightsError(f"unknown weights {name_or_url!r}; known: {', '.join(KNOWN_WEIGHTS)} "
                               "(or give a URL with --url)")
        check_name(name)

        existing = self._find(name)
        if existing is not None:
            if expected and existing.sha256 != expected:
                raise WeightsError(f"version {name!r} is already installed with sha256 {existing.sha256}, "
                                   f"not the requested {expected}")
            self.verify(existing)
            print(f"{name} is already downloaded ({existing.path})", file=sys.stderr)
            return self.use(name) if make_current else existing

        # Staged under a private name: the final name is only claimed under the lock in _commit.
        staged = self.root / f".{name}.{os.getpid()}.download"
        errors = []
        for candidate in urls:
            try:
                digest, size = _download.fetch(candidate, staged, sha256=expected, progress=progress)
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
            version = self._commit(staged, ".pth", fields, name, make_current)
        finally:
            staged.unlink(missing_ok=True)
        if not expected:
            print(f"warning: {name} was NOT verified against a pinned checksum (no sha256 was pinned); "
                  f"trusting it on first use and recording sha256 {digest}. Pin one with --sha256 HEX.",
                  file=sys.stderr)
        return version

    def not_downloaded(self) -> list:
        """Registry entries with no installed version of the same name."""
        names = {v.name for v in self.versions()}
        return [k for n, k in KNOWN_WEIGHTS.items() if n not in names]


__all__ = ["LoadedWeights", "Version", "WeightsStore", "check_fits", "default_root", "load_tensors",
           "read_state_file", "sha256_file"]
