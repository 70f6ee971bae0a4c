"""Train a new version from the current one and promote it unless it is measurably worse.

Both versions are scored on the same objects with the same click sets and the same mask rule, so
the differences pair object by object (``decision`` turns them into an interval and a verdict).
Which models train and which objects examine them is the run's plan (``crossval``): a small label
set is cross-validated and the shipped model trains on every label; otherwise a hold-out split.
A guard folder (whole objects never trained on) is a second exam, for the shipped model itself.
Every trained version is kept with its model card, promoted or not, so an admin can inspect it,
force it or roll back. Nothing is promoted from a run that finished no epoch (a time budget cut
it short) or examined on fewer than ``min_val_objects`` objects: such scores say too little.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..build import predictor_for
from ..data.benchmarks import load_dataset
from ..data.objects import ObjectRef, as_eval_objects, objects_key
from ..errors import InputError, WeightsError
from ..models import get_architecture, grow_state
from ..settings import Settings
from ..weights.registry import default_threshold
from ..weights.store import WeightsStore
from ..weights.versions import Version
from .card import model_card, outcome_metrics
from .crossval import Plan, cross_validation, hold_out
from .decision import Rule, decide
from .plan_runner import PlanRunner, Reporter
from .scoring import CORRECTION_CLICKS, set_scores, version_scores
from .trainer import TrainConfig

log = logging.getLogger(__name__)

IMAGENET = "imagenet:"


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
    reason: str = ""                           # the decision in one sentence, with its numbers
    val_objects: int = 0
    epochs_done: int = 0
    corrected: dict = field(default_factory=dict)   # corrections versions: the 6-click scores of both
    decision: dict = field(default_factory=dict)    # Decision.to_dict(): verdict, rule, exams, intervals

    def summary(self) -> dict:
        labels = (self.decision.get("exams") or [{}])[0]
        return {"version": self.version.name, "promoted": self.promoted, "reason": self.reason,
                "val_objects": self.val_objects, "epochs_done": self.epochs_done, "baseline": self.baseline,
                "baseline_val_miou": (None if self.baseline is None else round(self.baseline_val_miou, 2)),
                "val_miou": round(self.val_miou, 2),
                "gain": labels.get("gain"), "interval": [labels.get("low"), labels.get("high")],
                **({} if self.guard_miou is None else {
                    "guard_miou": round(self.guard_miou, 2),
                    "baseline_guard_miou": (None if self.baseline_guard_miou is None
                                            else round(self.baseline_guard_miou, 2))}),
                **{k: (None if v is None else round(v, 2)) for k, v in self.corrected.items()},
                "minutes": round(self.minutes, 2), "stopped": self.stopped, "decision": self.decision}


@dataclass(frozen=True)
class Start:
    """Where a run starts: the parent's weights and the mask rule its children inherit."""

    parent: str | None         # the version's name; None from ImageNet
    tag: str                   # names the run folder
    state: dict | None
    arch: str
    threshold: float
    trim: int
    input_size: int


def resolve_start(store: WeightsStore, init: str | None, arch: str | None) -> Start:
    """``init`` (default: the current version; ``imagenet:ARCH``: the ImageNet backbone), grown
    into ``arch`` when it names a larger architecture (``lite0`` -> ``lite0r``)."""
    if init and init.startswith(IMAGENET):
        arch = get_architecture(arch or init[len(IMAGENET):]).name
        return Start(None, init.replace(":", "-"), None, arch, default_threshold(arch), 0,
                     get_architecture(arch).input_size)
    parent = store.load(init)
    state, tag = parent.state_dict, parent.version
    if arch and get_architecture(arch).name != parent.arch:
        state = grow_state(arch, state)
        tag += f"-as-{arch}"      # a grown network never resumes a plain fine-tune's checkpoint
    # A child is thresholded and trimmed as its parent was tuned, and works at its size.
    return Start(parent.version, tag, state, arch or parent.arch, parent.threshold, parent.meta.trim,
                 parent.input_size)


def load_guard(folder: str | Path) -> list:
    """The guard folder's objects, masks decoded once for both versions (a layout ``evaluate`` reads)."""
    objects = list(load_dataset(folder))
    if not objects:
        raise InputError(f"{folder}: the guard folder holds no objects")
    return objects


def _current(store: WeightsStore):
    try:
        return store.load(None)
    except WeightsError:
        return None               # nothing is current yet: the first trained version wins


def _score_current(store: WeightsStore, object_sets: list, seed: int, device: str, clicks: int | None):
    """The current version (None if nothing is current yet) and its scores on each set."""
    incumbent = _current(store)
    if incumbent is None:
        return None, None
    base = set_scores(predictor_for(incumbent, device=device), object_sets, seed=seed, clicks=clicks)   # as served
    log.info("current version scored", extra={"current": incumbent.version,
                                              "objects": [len(s or []) for s in object_sets]})
    return incumbent, base


def _paired(plan: Plan, runs: list[dict], shipped: list, base: list | None, clicks: int | None):
    """``{clicks: (candidate, incumbent)}`` on the examined objects, in the plan's order, and the
    guard's pair (None without a guard); the incumbent's side is None when nothing was current."""
    cand = [r["scores"] for r in runs if "scores" in r] + ([shipped[0]] if plan.shipped.test else [])
    pairs = {}
    for key in [4] + ([clicks] if clicks else []):
        pairs[key] = (np.concatenate([c[key] for c in cand]),
                      None if base is None else np.concatenate([b[key] for b in base[:-1]]))
    guard_pair = None if shipped[1] is None else (shipped[1][4], None if base is None else base[-1][4])
    return pairs, guard_pair


def _blockers(plan: Plan, runs: list[dict], min_val_objects: int) -> list[str]:
    """Why the scores cannot decide: a training that finished no epoch, or too few objects."""
    out = []
    for part, run in zip(plan.parts, runs):
        if run["epochs_done"] < 1:
            where = "" if part is plan.shipped else f" in {part.name}"
            out.append(f"no full epoch finished{where} (stopped: {run['stopped']})")
    n = len(plan.exam_objects)
    if n < min_val_objects:
        out.append(f"only {n} validation object{'s' if n != 1 else ''}, fewer than {min_val_objects} "
                   "(DEXTR_TRAIN_MIN_VAL_OBJECTS)")
    return out


def train_and_promote(refs: list[ObjectRef], *, source: dict, config: TrainConfig, init: str | None = None,
                      run_dir: str | Path | None = None, store: WeightsStore | None = None, force: bool = False,
                      name: str | None = None, device: str = "auto", val_fraction: float = 0.1,
                      on_epoch: Callable[[dict], None] | None = None,
                      guard: str | Path | None = None, arch: str | None = None, min_val_objects: int = 0,
                      fresh: bool = False, on_progress: Callable[[dict], None] | None = None,
                      on_stage: Callable[[str], None] | None = None,
                      on_resume: Callable[[int], None] | None = None,
                      hold_out_objects: int | None = None, keep_last: bool = False, folds: int = 0,
                      rule: Rule = Rule()) -> Outcome:
    """Fine-tune ``init`` (see ``resolve_start``; ``arch`` grows it), then make the result current
    unless ``rule`` finds it measurably worse than the current version (``decision.decide``).

    ``folds`` >= 2 cross-validates over the images of ``refs`` and trains the shipped model on all
    of them, each training getting its share of ``config.max_minutes``; otherwise ``val_fraction``
    of the images are held out (``hold_out_objects``: by count, at least that many objects;
    ``crossval.hold_out``) and the best epoch by validation is kept, or the last with ``keep_last``.
    ``guard`` names a folder the shipped model must not lose more than ``rule.guard_margin`` on.
    ``fresh`` discards the run folder instead of resuming it. ``on_stage`` hears the stages,
    ``on_epoch``/``on_progress`` count epochs over all trainings (``epochs``, ``part``);
    ``on_resume`` the epoch a run resumes at. ``config`` is not changed."""
    store = store or WeightsStore.from_settings(Settings.from_env())
    guard_objects = load_guard(guard) if guard else None     # a bad folder fails before training
    start = resolve_start(store, init, arch)
    config = replace(config, arch=start.arch, threshold=start.threshold, trim=start.trim,
                     resolution=config.resolution or start.input_size)
    plan = (cross_validation(refs, folds) if folds >= 2 and len({r.image for r in refs}) >= 2
            else hold_out(refs, val_fraction, hold_out_objects, config.val_objects))
    run_dir = Path(run_dir) if run_dir else store.root / "runs" / f"{start.tag}-{objects_key(refs)[:12]}"
    if fresh:
        shutil.rmtree(run_dir, ignore_errors=True)       # checkpoints and finished folds alike
    clicks = CORRECTION_CLICKS if get_architecture(start.arch).corrections else None
    stage = Reporter(config.epochs, plan, on_epoch, on_progress, on_stage, on_resume)
    runner = PlanRunner(config, plan, run_dir, start.state, device, guard_objects, stage, clicks, keep_last)
    runner.prepare()       # a bad --freeze or a run folder of other settings fails before minutes of scoring
    exam_sets = [list(as_eval_objects(p.test)) for p in plan.examined]
    stage.stage("scoring the current version")
    incumbent, base = _score_current(store, exam_sets + [guard_objects], config.seed, device, clicks)
    runs, state = runner.run_all(exam_sets)
    scoring = time.monotonic()
    stage.stage("scoring the new version")
    shipped = version_scores(start.arch, state, config.resolution, start.threshold, start.trim,
                             [exam_sets[-1] if plan.shipped.test else None, guard_objects], seed=config.seed,
                             device=device, clicks=clicks)
    pairs, guard_pair = _paired(plan, runs, shipped, base, clicks)
    decision = decide(*pairs[4], where=plan.where, guard=guard_pair, corrected=pairs.get(clicks),
                      current=incumbent.version if incumbent else None,
                      blockers=tuple(_blockers(plan, runs, min_val_objects)), force=force, rule=rule)
    minutes = (sum(r["seconds"] for r in runs) + time.monotonic() - scoring) / 60
    metrics = outcome_metrics(decision, incumbent.version if incumbent else None, clicks)
    card = model_card(source=source, config=config, plan=plan, runs=runs, decision=decision, metrics=metrics,
                      parent=start.parent or init, guard=guard, guard_objects=guard_objects, minutes=minutes,
                      keep_last=keep_last, freeze_bn=runner.freeze_bn, device=runner.device)
    version = store.add_version(state, start.arch, name=name, parent=start.parent, metrics=metrics, card=card,
                                threshold=start.threshold, trim=start.trim, input_size=config.resolution,
                                make_current=decision.promoted)
    shutil.rmtree(run_dir, ignore_errors=True)   # finished: the next run starts fresh
    log.info("training finished", extra={"version": version.name, "promoted": decision.promoted,
                                         "decision": decision.sentence, **metrics})
    return _outcome(version, decision, incumbent, runs[-1], minutes, clicks)


def _outcome(version: Version, decision, incumbent, last: dict, minutes: float, clicks: int | None) -> Outcome:
    labels, guard = decision.exam("labels"), decision.exam("guard")
    corrected = {}
    six = decision.exam("labels after 2 corrections")
    if clicks and six is not None:
        corrected = {f"val_miou_{clicks}": six.candidate, f"baseline_val_miou_{clicks}": six.incumbent}
    return Outcome(version, decision.promoted, incumbent.version if incumbent else None,
                   labels.incumbent if labels.incumbent is not None else float("nan"), labels.candidate, minutes,
                   last["stopped"], guard.candidate if guard else None, guard.incumbent if guard else None,
                   reason=decision.sentence, val_objects=labels.objects, epochs_done=last["epochs_done"],
                   corrected=corrected, decision=decision.to_dict())
