"""Train a new version from the current one and promote it only if it is at least as good.

Both models are scored on the same validation objects with the same simulated clicks and the
same threshold, so "better" means better on identical inputs. A guard folder (whole objects the
team cares about, never trained on) adds a second exam the new version must also pass: a split of
the training data can keep improving while other objects get worse (see bsds-lite0-v3's card).
Every trained version is kept (with its model card) whether or not it becomes current, so an admin
can inspect or force it. Nothing is promoted from a run that finished no epoch (a time budget cut
the first one short) or judged on fewer than ``min_val_objects`` validation objects: such scores
say too little. The outcome's ``reason`` names the numbers that decided.
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..build import make_predictor, model_from
from ..data.benchmarks import load_dataset
from ..data.objects import ObjectRef, objects_key
from ..data.splits import hold_out_split, split_for_training, spread
from ..errors import InputError, WeightsError
from ..models import get_architecture, grow_state
from ..settings import Settings
from ..weights.registry import default_threshold
from ..weights.store import WeightsStore
from ..weights.versions import Version
from .scoring import CORRECTION_CLICKS, score_objects
from .trainer import TrainConfig, Trainer

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
    guard_miou: float | None = None            # the new version on the guard folder
    baseline_guard_miou: float | None = None   # the current version there
    reason: str = ""                           # why it was or was not promoted, with the numbers
    val_objects: int = 0
    epochs_done: int = 0
    corrected: dict = field(default_factory=dict)   # corrections versions: the 6-click scores of both

    def summary(self) -> dict:
        return {"version": self.version.name, "promoted": self.promoted, "reason": self.reason,
                "val_objects": self.val_objects, "epochs_done": self.epochs_done, "baseline": self.baseline,
                "baseline_val_miou": (None if self.baseline is None else round(self.baseline_val_miou, 2)),
                "val_miou": round(self.val_miou, 2),
                **({} if self.guard_miou is None else {
                    "guard_miou": round(self.guard_miou, 2),
                    "baseline_guard_miou": (None if self.baseline_guard_miou is None
                                            else round(self.baseline_guard_miou, 2))}),
                **{k: (None if v is None else round(v, 2)) for k, v in self.corrected.items()},
                "minutes": round(self.minutes, 2), "stopped": self.stopped}


IMAGENET = "imagenet:"


def _scores(arch: str, state: dict, input_size: int, threshold: float, trim: int, val_refs, guard_objects,
            seed: int, device: str, clicks: int | None = None, version: str = "custom") -> dict:
    """One version's ``val_miou`` and ``guard_miou`` (None without a guard), from one predictor;
    with ``clicks`` also ``val_miou_6`` and ``guard_miou_6`` (a version without corrections
    ignores the clicks, so there it scores its 4-click masks)."""
    predictor = make_predictor(model_from(arch, state), arch, input_size, threshold, trim, version=version,
                               device=device)
    return score_objects(predictor, val_refs, guard_objects, seed, clicks)


def decide(*, val: float, base_val: float | None, baseline: str | None, val_objects: int, epochs_done: int,
           stopped: str, min_val_objects: int, guard: float | None = None, base_guard: float | None = None,
           corrected: dict | None = None, base_corrected: dict | None = None,
           force: bool = False) -> tuple[bool, str]:
    """Whether to promote, and why, in one line with the numbers that decided.

    The rule: no worse on the validation split, and no worse on the guard if there is one; a
    corrections version must also be no worse on each score of ``corrected`` (e.g.
    ``{"val_miou_6": ..., "guard_miou_6": ...}``) than the incumbent's same score."""
    corrected, base_corrected = corrected or {}, base_corrected or {}
    numbers = f"validation mIoU {val:.2f} on {val_objects} object{'s' if val_objects != 1 else ''}"
    if baseline is not None:
        numbers += f" vs {base_val:.2f} for {baseline}"
    if guard is not None:
        numbers += f"; guard mIoU {guard:.2f}" + ("" if base_guard is None else f" vs {base_guard:.2f}")
    for key, value in corrected.items():
        if value is not None:
            base = base_corrected.get(key)
            numbers += f"; {key} {value:.2f}" + ("" if base is None else f" vs {base:.2f}")
    too_little = []
    if epochs_done < 1:
        too_little.append(f"no full epoch finished (stopped: {stopped})")
    if val_objects < min_val_objects:
        too_little.append(f"only {val_objects} validation object{'s' if val_objects != 1 else ''}, fewer than "
                          f"{min_val_objects} (DEXTR_TRAIN_MIN_VAL_OBJECTS)")
    worse = []
    if baseline is not None and not val >= base_val:
        worse.append("worse on validation")
    if baseline is not None and guard is not None and base_guard is not None and not guard >= base_guard:
        worse.append("worse on the guard")
    for key, value in corrected.items():
        base = base_corrected.get(key)
        if baseline is not None and value is not None and base is not None and not value >= base:
            worse.append(f"worse on {key}")
    if not too_little and not worse:
        return True, ("promoted: " + ("at least as good as the current version: " if baseline is not None
                                      else "no current version to compare with: ") + numbers)
    why = "; ".join(too_little + worse)
    if force:
        return True, f"promoted by --force although {why}: {numbers}"
    return False, f"not promoted: {why}: {numbers}"


def load_guard(folder: str | Path) -> list:
    """The guard folder's objects, masks decoded once for both versions (a layout ``evaluate`` reads)."""
    objects = list(load_dataset(folder))
    if not objects:
        raise InputError(f"{folder}: the guard folder holds no objects")
    return objects


def train_and_promote(refs: list[ObjectRef], *, source: dict, config: TrainConfig, init: str | None = None,
                      run_dir: str | Path | None = None, store: WeightsStore | None = None, force: bool = False,
                      name: str | None = None, device: str = "auto", val_fraction: float = 0.1,
                      on_epoch: Callable[[dict], None] | None = None,
                      guard: str | Path | None = None, arch: str | None = None, min_val_objects: int = 0,
                      fresh: bool = False, on_progress: Callable[[dict], None] | None = None,
                      on_stage: Callable[[str], None] | None = None,
                      on_resume: Callable[[int], None] | None = None,
                      hold_out_objects: int | None = None, keep_last: bool = False) -> Outcome:
    """Fine-tune ``init`` (default: the current version; ``imagenet:ARCH`` starts from ImageNet),
    then make the result current only if it scores at least the current version's mIoU, on the
    validation split and, when ``guard`` names a folder, on that folder's objects too, after at
    least one full epoch and on at least ``min_val_objects`` validation objects (see ``decide``).
    ``arch`` grows ``init`` into a larger architecture (``lite0`` -> ``lite0r``); ``fresh`` discards
    the run folder's checkpoint instead of resuming it. ``on_stage`` hears "scoring the current
    version", "training", "scoring the new version"; ``on_resume`` the epoch a run resumes at.
    ``hold_out_objects`` (the retraining job) holds out ``val_fraction`` of the images by count, at
    least that many objects (``hold_out_split``); None keeps each image's side by its own hash.
    ``keep_last`` ships the last epoch instead of the best by validation: on a handful of held-out
    objects the best epoch is mostly noise. ``store`` defaults to the one ``Settings`` name."""
    stage = on_stage or (lambda name: None)
    store = store or WeightsStore.from_settings(Settings.from_env())
    guard_objects = load_guard(guard) if guard else None     # a bad folder fails before training
    train_refs, val_refs = (split_for_training(refs, val_fraction) if hold_out_objects is None
                            else hold_out_split(refs, val_fraction, hold_out_objects))
    val_refs = spread(val_refs, config.val_objects)
    if init and init.startswith(IMAGENET):
        arch = get_architecture(arch or init[len(IMAGENET):]).name
        parent_name, init_state, threshold, trim = None, None, default_threshold(arch), 0
        parent_size = get_architecture(arch).input_size
    else:
        parent = store.load(init)
        parent_name, init_state, threshold = parent.version, parent.state_dict, parent.threshold
        trim = parent.meta.trim    # a child is thresholded and trimmed as its parent was tuned
        parent_size = parent.input_size
        if arch and get_architecture(arch).name != parent.arch:
            init_state = grow_state(arch, init_state)
        arch = arch or parent.arch
    # A fine-tuned version keeps working at its parent's size unless told otherwise.
    input_size = config.resolution or parent_size
    config.arch, config.threshold, config.trim, config.resolution = arch, threshold, trim, input_size
    tag = parent_name or init.replace(":", "-")
    if parent_name and arch != parent.arch:
        tag += f"-as-{arch}"      # a grown network never resumes a plain fine-tune's checkpoint
    run_dir = Path(run_dir) if run_dir else store.root / "runs" / f"{tag}-{objects_key(refs)[:12]}"
    if fresh:
        for name in ("checkpoint.pt", "best.pt"):
            (run_dir / name).unlink(missing_ok=True)
    # Built before the current version is scored, so a bad --freeze or a run folder holding other
    # settings fails at once rather than after minutes of scoring.
    trainer = Trainer(config, train_refs, val_refs, run_dir, init_state=init_state, device=device,
                      on_epoch=on_epoch, guard_objects=guard_objects, on_progress=on_progress)
    if trainer.resumed_from_epoch is not None and on_resume:
        on_resume(trainer.resumed_from_epoch)
    stage("scoring the current version")
    try:
        incumbent = store.load(None)
    except WeightsError:
        incumbent = None          # nothing is current yet: the first trained version wins
    clicks = CORRECTION_CLICKS if trainer.corrections else None
    incumbent_scores = (
        _scores(incumbent.arch, incumbent.state_dict, incumbent.input_size, incumbent.threshold,
                incumbent.meta.trim, val_refs, guard_objects, config.seed, device, clicks, incumbent.version)
        if incumbent else {"val_miou": float("nan"), "guard_miou": None})
    incumbent_score, incumbent_guard = incumbent_scores["val_miou"], incumbent_scores["guard_miou"]
    log.info("current version scored", extra={"current": incumbent and incumbent.version,
                                              "val_objects": len(val_refs), **incumbent_scores})
    stage("training")
    result = trainer.run()
    state = result.state_dict
    if keep_last and result.epochs_done:
        state = {k: v.detach().cpu().clone() for k, v in trainer.result_model().state_dict().items()}
    stage("scoring the new version")
    scoring = time.monotonic()
    scores = _scores(arch, state, input_size, threshold, trim, val_refs, guard_objects,
                     config.seed, device, clicks)
    score, guard_score = scores["val_miou"], scores["guard_miou"]
    corrected = {k: v for k, v in scores.items() if k.endswith(f"_{clicks}")} if clicks else {}
    base_corrected = {k: v for k, v in incumbent_scores.items() if k in corrected}
    promoted, reason = decide(val=score, base_val=incumbent_score if incumbent else None,
                              baseline=incumbent.version if incumbent else None, val_objects=len(val_refs),
                              epochs_done=result.epochs_done, stopped=result.stopped,
                              min_val_objects=min_val_objects, guard=guard_score, base_guard=incumbent_guard,
                              corrected=corrected, base_corrected=base_corrected, force=force)
    minutes = (result.seconds + time.monotonic() - scoring) / 60   # every sitting of a resumed run
    metrics = {"val_miou": round(score, 2)}
    if incumbent:
        metrics.update(baseline_version=incumbent.version, baseline_val_miou=round(incumbent_score, 2))
    if guard_objects:
        metrics["guard_miou"] = round(guard_score, 2)
        if incumbent_guard is not None:
            metrics["baseline_guard_miou"] = round(incumbent_guard, 2)
    for key, value in corrected.items():
        if value is not None:
            metrics[key] = round(value, 2)
            if incumbent and base_corrected.get(key) is not None:
                metrics[f"baseline_{key}"] = round(base_corrected[key], 2)
    card = {
        "data": {**source, "train_objects": len(train_refs), "val_objects": len(val_refs),
                 "train_images": len({r.image for r in train_refs}), "val_images": len({r.image for r in val_refs})},
        "hyper_parameters": {k: v for k, v in asdict(config).items() if k != "augment"} | {
            "augment": asdict(config.augment), "freeze_bn": trainer.freeze_bn},
        "metrics": metrics,
        "parent": parent_name or init,
        "guard": ({"path": str(guard), "objects": len(guard_objects)} if guard_objects else None),
        "duration_minutes": round(minutes, 2),
        "history": result.history,
        "stopped": result.stopped,
        "kept": "last epoch" if keep_last and result.epochs_done else "best epoch by validation",
        "promoted": promoted,
        "decision": reason,
        "forced": reason.startswith("promoted by --force"),
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "device": str(trainer.device)},
    }
    version = store.add_version(state, arch, name=name, parent=parent_name, metrics=metrics,
                                card=card, threshold=threshold, trim=trim, input_size=input_size,
                                make_current=promoted)
    shutil.rmtree(run_dir, ignore_errors=True)   # finished: the next run starts fresh
    log.info("training finished", extra={"version": version.name, "promoted": promoted, "decision": reason,
                                         "val_miou": score, "baseline_val_miou": incumbent_score,
                                         "guard_miou": guard_score, "baseline_guard_miou": incumbent_guard})
    outcome_corrected = {}
    for key, value in corrected.items():
        outcome_corrected[key] = value
        outcome_corrected[f"baseline_{key}"] = base_corrected.get(key)
    return Outcome(version, promoted, incumbent.version if incumbent else None, incumbent_score, score,
                   minutes, result.stopped, guard_score, incumbent_guard, reason=reason,
                   val_objects=len(val_refs), epochs_done=result.epochs_done, corrected=outcome_corrected)
