"""A training run's folder: ``checkpoint.pt`` (everything needed to resume) and ``best.pt`` (the
best validation weights), each rewritten with ``files.atomic_write`` so a killed run never leaves
half a file, and read tensors-and-plain-data only, so a file planted there never runs code."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..weights.files import atomic_write

NEEDED = ("model", "optimizer", "epoch", "step", "best", "bad_epochs", "history", "rng", "torch_rng")
SETTINGS = ("arch", "resolution", "freeze")  # a run resumed with other values would be another run


def plain(value):
    """Numpy scalars inside lists and dicts as Python numbers, so ``weights_only`` loads them."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_run_file(path: Path, run_dir: Path):
    """A run folder's ``checkpoint.pt`` or ``best.pt``, tensors and plain data only; anything else
    (truncated, corrupt, or a pickle that would run code) is an :class:`InputError` in one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip, pickle and torch errors all mean "not usable"
        why = (
            "it holds objects other than tensors and plain data"
            if isinstance(exc, pickle.UnpicklingError)
            else f"it is truncated or corrupt ({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]})"
        )
        raise InputError(
            f"cannot resume from {path}: {why}; delete {run_dir} or run `train --fresh` to start this run over"
        ) from None


def save(obj, path: Path) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh))


class RunFolder:
    """Where one run keeps its checkpoint and its best weights."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def best_path(self) -> Path:
        return self.path / "best.pt"

    def save_checkpoint(self, state: dict) -> None:
        save(state, self.checkpoint_path)

    def save_best(self, state_dict: dict) -> None:
        save(state_dict, self.best_path)

    def read_best(self) -> dict | None:
        return read_run_file(self.best_path, self.path) if self.best_path.exists() else None

    def read_checkpoint(self, settings: dict) -> dict | None:
        """The checkpoint to resume from (None: start afresh); refused when it is not a training
        checkpoint or was made with other ``settings`` (the ``SETTINGS`` of the run's config)."""
        if not self.checkpoint_path.exists():
            return None
        ck = read_run_file(self.checkpoint_path, self.path)
        if not isinstance(ck, dict) or any(k not in ck for k in NEEDED) or not isinstance(ck.get("config"), dict):
            raise InputError(
                f"cannot resume from {self.checkpoint_path}: it is not a training checkpoint; "
                f"delete {self.path} or run `train --fresh` to start this run over"
            )
        before = {k: ck.get("config", {}).get(k) for k in SETTINGS}
        now = {k: settings[k] for k in SETTINGS}
        before["freeze"] = tuple(before["freeze"] or ())
        if before != now:
            raise InputError(
                f"{self.path} holds a run with other settings ({before} vs {now}): "
                "delete that folder or give another --run-dir"
            )
        return ck


__all__ = ["RunFolder", "plain", "read_run_file", "save"]
