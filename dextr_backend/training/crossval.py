"""Which models a run trains and which objects examine them: a hold-out split, or cross-validation
over a small label set, so that every label is evidence and none is lost to the shipped model.

Why: holding out 15 % of 25 labels leaves 4 objects to decide on, which cannot decide anything,
and trains the shipped model on 21 (issue 27). With k folds every label is scored once by a
model that never trained on it; the shipped model then trains on all of them. The fold models
estimate what the same training does with this team's labels; the shipped one, trained on more,
is expected to do at least as well (the usual argument for cross-validation), and the guard
folder examines the shipped model itself. A fold model trains on (k-1)/k of the labels and for
(k-1)/k of the epochs (``fold_epochs``), so each label is seen as often as in the shipped
training: with k = 2 the two folds together cost one training, not two, which keeps a 25-label
run inside 10 minutes on 2 CPU cores (README, "How a new version is promoted").

Folds are whole images (objects of one picture never straddle two folds), dealt round-robin in
the hash order ``is_validation`` uses, so they depend on the pictures only, not on their order.
A finished fold's scores are kept in its folder, so a resumed run does not train it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.objects import ObjectRef
from ..data.splits import hold_out_split, image_rank, split_for_training, spread
from ..errors import InputError

if TYPE_CHECKING:
    from .trainer import TrainConfig


@dataclass(frozen=True)
class Part:
    """One training of a run."""

    name: str  # "fold 1 of 2", "all labels", "training"
    folder: str  # its sub-folder of the run folder ("" = the run folder itself)
    train: list[ObjectRef]
    test: list[ObjectRef]  # the objects its model is examined on (none for a CV's final model)
    validate: bool  # the trainer scores ``test`` (and the guard) after every epoch
    folds: int = 0  # a fold model of a k-fold cross-validation: (k-1)/k of the epochs (``fold_epochs``)


@dataclass(frozen=True)
class Plan:
    parts: list[Part]  # in training order; the last one is the version shipped
    where: str  # the examined objects, as the decision's sentence names them
    scheme: dict  # for the model card

    @property
    def shipped(self) -> Part:
        return self.parts[-1]

    @property
    def examined(self) -> list[Part]:
        """The parts whose models are compared with the current version, object by object."""
        return [p for p in self.parts if p.test]

    @property
    def exam_objects(self) -> list[ObjectRef]:
        return [r for p in self.examined for r in p.test]


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def cross_validation(refs: list[ObjectRef], folds: int) -> Plan:
    """``folds`` fold models (each trains on the other folds' images, is examined on its own), then
    the shipped model on every object."""
    images = sorted({r.image for r in refs}, key=lambda image: (image_rank(image), image))
    k = min(folds, len(images))
    if k < 2:
        raise InputError(f"cross-validation needs objects on at least 2 images, got {len(images)}")
    fold_of = {image: i % k for i, image in enumerate(images)}
    parts = [
        Part(
            f"fold {f + 1} of {k}",
            f"fold-{f + 1}",
            [r for r in refs if fold_of[r.image] != f],
            [r for r in refs if fold_of[r.image] == f],
            validate=False,
            folds=k,
        )
        for f in range(k)
    ]
    parts.append(Part(f"all {_count(len(refs), 'object')}", "all", list(refs), [], validate=False))
    return Plan(
        parts,
        f"{_count(len(refs), 'labelled object')} ({k}-fold cross-validation)",
        {"kind": "cross-validation", "folds": k, "objects": len(refs)},
    )


def fold_epochs(epochs: int, folds: int) -> int:
    """The epochs of one fold model of a ``folds``-fold cross-validation: (k-1)/k of ``epochs``, at
    least one, so that it sees each of its labels as often as the shipped training sees each of all."""
    return max(1, round(epochs * (folds - 1) / folds))


def part_config(config: TrainConfig, part: Part) -> TrainConfig:
    """``config`` as ``part`` trains it: a fold model's shorter schedule keeps its shape (the
    warm-up the same share of the steps, then the same cosine decay)."""
    if not part.folds:
        return config
    epochs = fold_epochs(config.epochs, part.folds)
    return replace(config, epochs=epochs, warmup_steps=round(config.warmup_steps * epochs / config.epochs))


def part_epochs(config: TrainConfig, plan: Plan) -> list[int]:
    """The epochs each part of ``plan`` trains, in order (progress and the time budget follow them)."""
    return [part_config(config, part).epochs for part in plan.parts]


def hold_out(refs: list[ObjectRef], val_fraction: float, hold_out_objects: int | None, val_objects: int) -> Plan:
    """One model, trained on most images and examined on the rest (``val_fraction`` of them; with
    ``hold_out_objects`` by count, at least that many objects: ``hold_out_split``), validated after
    every epoch so the best epoch can be kept."""
    train, val = (
        split_for_training(refs, val_fraction)
        if hold_out_objects is None
        else hold_out_split(refs, val_fraction, hold_out_objects)
    )
    val = spread(val, val_objects)
    part = Part("training", "", train, val, validate=True)
    return Plan(
        [part],
        _count(len(val), "held-out object"),
        {"kind": "hold-out", "val_fraction": val_fraction, "objects": len(val)},
    )


def read_scores(folder: Path, key: dict) -> dict | None:
    """A finished part's record (``scores`` as arrays), if it was made with the same ``key``."""
    path = folder / "scores.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("key") != key:
        return None
    record["scores"] = {int(k): np.asarray(v, dtype=float) for k, v in record["scores"].items()}
    return record


def write_scores(folder: Path, key: dict, scores: dict, **facts) -> None:
    """Keep a finished part's scores (and ``facts``: epochs, minutes) for a resumed run."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"key": key, "scores": {str(k): v.tolist() for k, v in scores.items()}, **facts}
    tmp = folder / "scores.json.tmp"
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(folder / "scores.json")


__all__ = [
    "Part",
    "Plan",
    "cross_validation",
    "fold_epochs",
    "hold_out",
    "part_config",
    "part_epochs",
    "read_scores",
    "write_scores",
]
