"""Train a new version from the current one and promote it only if it is at least as good.

Both models are scored on the same validation objects with the same simulated clicks and the
same threshold, so "better" means better on identical inputs. Every trained version is kept
(with its model card) whether or not it becomes current, so an admin can inspect or force it.
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import InputError, WeightsError
from ..models import build_model, get_architecture, load_state
from ..predictor import DextrPredictor
from ..weights.registry import default_threshold
from ..weights.store import Version, WeightsStore
from .datasets import ObjectRef, split, spread
from .trainer import TrainConfig, Trainer, validation_miou

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    version: Version
    promoted: bool
    baseline: str | None          # the version that was current when training started
    baseline_val_miou: float
    val_miou: float
    minutes: float
    stopped: str

    def summary(self) -> dict:
        return {"version": self.version.name, "promoted": self.promoted, "baseline": self.baseline,
                "baseline_val_miou": (None if self.baseline is None else round(self.baseline_val_miou, 2)),
                "val_miou": round(self.val_miou, 2),
                "minutes": round(self.minutes, 2), "stopped": self.stopped}


def split_for_training(refs: list[ObjectRef], fraction: float) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Deterministic split by image; with very few images, still keep one image aside if possible."""
    train, val = split(refs, fraction)
    images = sorted({r.image for r in refs})
    if not val and len(images) >= 2:
        held = images[-1]
        train = [r for r in refs if r.image != held]
        val = [r for r in refs if r.image == held]
    if not train:
        raise InputError("need objects on at least one image to train on")
    if not val:
        log.warning("only one image: validating on the training image itself")
        val = list(train)
    return train, val


IMAGENET = "imagenet:"


def _score(arch: str, state: dict, input_size: int, threshold: float, refs, seed: int, device: str) -> float:
    model = load_state(build_model(arch), state)
    return validation_miou(DextrPredictor(model, input_size, threshold=threshold, device=device), refs, seed)


def train_and_promote(refs: list[ObjectRef], *, source: dict, config: TrainConfig, init: str | None = None,
                      run_dir: str | Path | None = None, store: WeightsStore | None = None, force: bool = False,
                      name: str | None = None, device: str = "auto", val_fraction: float = 0.1,
                      on_epoch: Callable[[dict], None] | None = None) -> Outcome:
    """Fine-tune ``init`` (default: the current version; ``imagenet:ARCH`` starts from ImageNet),
    then make the result current only if it scores at least the current version's mIoU."""
    store = store or WeightsStore()
    train_refs, val_refs = split_for_training(refs, val_fraction)
    val_refs = spread(val_refs, config.val_objects)
    if init and init.startswith(IMAGENET):
        arch = get_architecture(init[len(IMAGENET):]).name
        parent_name, init_state, threshold = None, None, default_threshold(arch)
        parent_size = get_architecture(arch).input_size
    else:
        parent = store.load(init)
        arch, parent_name, init_state, threshold = parent.arch, parent.version, parent.state_dict, parent.threshold
        parent_size = parent.input_size
    # A fine-tuned version keeps working at its parent's size unless told otherwise.
    input_size = config.resolution or parent_size
    config.arch, config.threshold, config.resolution = arch, threshold, input_size
    try:
        incumbent = store.load(None)
    except WeightsError:
        incumbent = None          # nothing is current yet: the first trained version wins
    incumbent_score = (_score(incumbent.arch, incumbent.state_dict, incumbent.input_size, incumbent.threshold,
                              val_refs, config.seed, device) if incumbent else float("nan"))
    log.info("current version scored", extra={"current": incumbent and incumbent.version,
                                              "val_miou": incumbent_score, "val_objects": len(val_refs)})
    tag = parent_name or init.replace(":", "-")
    run_dir = Path(run_dir) if run_dir else store.root / "runs" / f"{tag}-{source.get('hash', 'data')[:12]}"

    started = time.monotonic()
    trainer = Trainer(config, train_refs, val_refs, run_dir, init_state=init_state, device=device,
                      on_epoch=on_epoch)
    result = trainer.run()
    score = _score(arch, result.state_dict, input_size, threshold, val_refs, config.seed, device)
    better = incumbent is None or score >= incumbent_score
    promoted = force or better
    minutes = (time.monotonic() - started) / 60
    metrics = {"val_miou": round(score, 2)}
    if incumbent:
        metrics.update(baseline_version=incumbent.version, baseline_val_miou=round(incumbent_score, 2))
    card = {
        "data": {**source, "train_objects": len(train_refs), "val_objects": len(val_refs),
                 "train_images": len({r.image for r in train_refs}), "val_images": len({r.image for r in val_refs})},
        "hyper_parameters": {k: v for k, v in asdict(config).items() if k != "augment"} | {
            "augment": asdict(config.augment), "freeze_bn": trainer.freeze_bn},
        "metrics": metrics,
        "parent": parent_name or init,
        "duration_minutes": round(minutes, 2),
        "history": result.history,
        "stopped": result.stopped,
        "promoted": promoted,
        "forced": bool(force and not better),
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "device": str(trainer.device)},
    }
    version = store.add_version(result.state_dict, arch, name=name, parent=parent_name, metrics=metrics,
                                card=card, threshold=threshold, input_size=input_size,
                                make_current=promoted)
    shutil.rmtree(run_dir, ignore_errors=True)   # finished: the next run starts fresh
    log.info("training finished", extra={"version": version.name, "promoted": promoted, "val_miou": score,
                                         "baseline_val_miou": incumbent_score})
    return Outcome(version, promoted, incumbent.version if incumbent else None, incumbent_score, score,
                   minutes, result.stopped)
