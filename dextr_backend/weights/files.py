"""Files on disk: hashing, the one atomic write, a cross-process lock, and tensors-only loading.

A reader must never see half a file, and a loaded file must never be able to run code, so every
weights file, manifest, index and training checkpoint is written and read through here.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import torch

from ..errors import WeightsError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_temp(directory: Path, write_fn: Callable[[BinaryIO], object], stem: str = "weights") -> Path:
    """Write via ``write_fn(fileobj)`` to a fsynced temp file in ``directory``; the caller renames
    it (or lets ``atomic_write`` do so). Nothing is left behind when ``write_fn`` fails."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from a server running as another user
        with os.fdopen(fd, "wb") as fh:
            write_fn(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(tmp: Path, dest: Path) -> None:
    """Move a finished temp file over ``dest`` and make the rename itself durable."""
    try:
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def atomic_write(dest: Path | str, write_fn: Callable[[BinaryIO], object]) -> None:
    """Temp file beside ``dest``, fsync, rename over it, fsync the folder: readers see the old
    file or the new one, never a mix, even across a crash."""
    dest = Path(dest)
    replace(write_temp(dest.parent, write_fn, dest.name), dest)


@contextmanager
def locked(path: Path | str) -> Iterator[None]:
    """Exclusive ``flock`` on ``path`` (created if missing) across processes, for read-modify-write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


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
            reason = "it holds Python objects besides tensors, which are refused because loading them could run code"
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
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise WeightsError(
            f"weights file {path} holds no state dict (expected a dict of tensors, "
            "a dict with a 'state_dict' key, or a training run's checkpoint.pt)"
        )
    return obj


__all__ = [
    "atomic_write",
    "fsync_dir",
    "load_tensors",
    "locked",
    "read_state_file",
    "replace",
    "sha256_file",
    "write_temp",
]
