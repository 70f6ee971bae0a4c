"""What a weights version is (its record in ``manifest.json`` / ``index.json``) and the checks a
version, a name or a file must pass before anything is written or unpickled."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

import torch

from ..errors import WeightsError
from ..models import ARCHITECTURES, build_model, load_state
from .files import read_state_file, sha256_file
from .registry import KNOWN_WEIGHTS

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RECORD_FIELDS = (
    "name",
    "arch",
    "input_size",
    "threshold",
    "trim",
    "file",
    "sha256",
    "size",
    "metrics",
    "parent",
    "created",
    "source",
    "card",
    "base",
    "corrector",
)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_trim(trim: int, error: type[Exception] = WeightsError) -> int:
    """A boundary trim is a whole number of pixels, 0 or more."""
    if int(trim) != trim or trim < 0:
        raise error(f"trim {trim} must be a whole number of pixels, 0 or more")
    return int(trim)


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
        raise WeightsError(
            f"invalid version name {name!r}: use up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
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
    trim: int = 0  # pixels eroded off each mask's boundary after thresholding (PostProcess.trim)
    # A version that grows a frozen parent (lite0h) may keep only what it adds in ``file`` and name
    # the parent's file here, ``{"file", "sha256", "size"}``, so the parent is never stored twice.
    base: dict | None = field(default=None, hash=False)
    corrector: str | None = None  # how it serves corrective clicks by default (DEXTR_CORRECTOR=auto)

    @property
    def takes_corrections(self) -> bool:
        """Whether it uses corrective clicks after the extreme points: its network does (``lite0c``,
        ``lite0h``), or it is served with a training-free corrector."""
        arch = ARCHITECTURES.get(self.arch)
        return bool(arch and arch.corrections) or self.corrector not in (None, "none")

    @property
    def base_path(self) -> Path | None:
        """The parent's file this version's ``file`` completes, where it has one."""
        if not self.base or self.path is None:
            return None
        return self.path.parent / str(self.base["file"])

    @classmethod
    def from_record(cls, record: dict, directory: Path, *, shipped: bool = False, origin: Path) -> Version:
        try:
            card = record.get("card") or {}
            if isinstance(card, str):  # a shipped model card kept as a markdown file
                card = {"file": card}
            return cls(
                name=str(record["name"]),
                arch=str(record["arch"]),
                input_size=int(record["input_size"]),
                threshold=float(record["threshold"]),
                file=str(record["file"]),
                sha256=record.get("sha256"),
                size=record.get("size"),
                metrics=dict(record.get("metrics") or {}),
                parent=record.get("parent"),
                created=record.get("created"),
                source=record.get("source"),
                card=dict(card),
                path=directory / str(record["file"]),
                shipped=shipped,
                trim=check_trim(record.get("trim") or 0, ValueError),
                base=_base(record.get("base")),
                corrector=record.get("corrector"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{origin} has a malformed version record ({exc!r}); fix or remove it") from None

    def to_record(self) -> dict:
        return {k: getattr(self, k) for k in RECORD_FIELDS}


def _base(value) -> dict | None:
    """A record's ``base``: the parent file's name, sha256 and size, or None."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("file"), str) or "/" in value["file"]:
        raise ValueError(f"base {value!r} is not {{file, sha256, size}} of a file beside it")
    return {"file": value["file"], "sha256": check_sha256(value.get("sha256")), "size": value.get("size")}


@dataclass
class LoadedWeights:
    version: str
    arch: str
    input_size: int
    threshold: float
    state_dict: dict[str, torch.Tensor]
    meta: Version


def check_fits(state: dict[str, torch.Tensor], arch: str) -> None:
    """Strictly fit a state dict to ``arch``, on the meta device so no memory is spent."""
    with torch.device("meta"):
        model = build_model(arch)
    load_state(model, {k: v.to("meta") for k, v in state.items()})


def verify_file(meta: Version) -> None:
    """Refuse a missing, truncated or altered file (or parent file) before anything unpickles it."""
    _verify(meta, meta.path, meta.sha256, meta.size)
    if meta.base:
        _verify(meta, meta.base_path, meta.base["sha256"], meta.base["size"])


def read_version_state(meta: Version) -> dict[str, torch.Tensor]:
    """The whole state dict of a verified version: its file, under its parent's file where it has one."""
    # ``verify_file`` refused a version whose file (or parent's file) has no path.
    state = read_state_file(cast(Path, meta.path))
    if meta.base:
        parent = read_state_file(cast(Path, meta.base_path))
        state = {f"base.{k}": v for k, v in parent.items()} | state
    return state


def _verify(meta: Version, path: Path | None, sha256: str | None, size: int | None) -> None:
    if meta.shipped:
        redo = "reinstall dextr-backend"
    elif meta.name in KNOWN_WEIGHTS:
        redo = f"re-run `dextr-backend weights download {meta.name}`"
    else:
        redo = "import or train it again"
    if path is None or not path.is_file():
        raise WeightsError(
            f"weights file {path} of version {meta.name!r} is missing; {redo}, "
            "or pick another with `dextr-backend weights use VERSION`"
        )
    if sha256 is None:
        return
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise WeightsError(
            f"weights file {path} of version {meta.name!r} is truncated or corrupt "
            f"({actual_size} bytes, expected {size}) and was not loaded; {redo}"
        )
    actual = sha256_file(path)
    if actual != sha256:
        raise WeightsError(
            f"weights file {path} of version {meta.name!r} is corrupt (sha256 {actual[:12]}..., "
            f"expected {sha256[:12]}...) and was not loaded; {redo}"
        )


__all__ = [
    "LoadedWeights",
    "NAME_RE",
    "RECORD_FIELDS",
    "Version",
    "check_fits",
    "check_name",
    "check_sha256",
    "check_trim",
    "read_version_state",
    "utc_now",
    "verify_file",
]
