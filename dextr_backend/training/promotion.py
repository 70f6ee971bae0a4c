"""Train a new version from the current one and promote it unless it is measurably worse.

Both versions are scored on the same objects with the same click sets and the same mask rule, so
the differences pair object by object (``decision`` turns them into an interval and a verdict).
Which models train and which objects examine them is the run's plan (``crossval``): a small label
set is cross-validated and the shipped model trains on every label; otherwise a hold-out split.
A guard folder (whole objects never trained on) is a second exam, for the shipped model itself.
Every trained version is kept with its model card, promoted or not, so an admin can inspect it,
force it or roll back. Nothing is promoted from a run that finished no epoch (a time budget cut
it short) or examined on fewer than ``min_val_objects`` objects: such scores say too little.

It runs over 300 lines: the steps of one run (start, plan, train, score, decide, write) and
its outcome, in the order they happen.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

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
from .decision import Decision, Rule, decide
from .plan_runner import Listeners, PlanRunner, Reporter
from .scoring import CORRECTION_CLICKS, set_scores, version_scores
from .trainer import TrainConfig

log = logging.getLogger(__name__)

IMAGENET = "imagenet:"


@dataclass
class Outcome:
    version: Version
    promoted: bool
    baseline: str | None  # the version that was current when training started
    baseline_val_miou: float
    val_miou: float
    minutes: float
    stopped: str
    guard_miou: float | None = None  # the new version on the guard folder
    baseline_guard_miou: float | None = None  # the current version there
    reason: str = ""  # the decision in one sentence, with its numbers
    val_objects: int = 0
    epochs_done: int = 0
    corrected: dict = field(default_factory=dict)  # corrections versions: the 6-click scores of both
    decision: dict = field(default_factory=dict)  # Decision.to_dict(): verdict, rule, exams, intervals

    def summary(self) -> dict:
        labels = (self.decision.get("exams") or [{}])[0]
        return {
            "version": self.version.name,
            "promoted": self.promoted,
            "reason": self.reason,
            "val_objects": self.val_objects,
            "epochs_done": self.epochs_done,
            "baseline": self.baseline,
            "baseline_val_miou": (None if self.baseline is None else round(self.baseline_val_miou, 2)),
            "val_miou": round(self.val_miou, 2),
            "gain": labels.get("gain"),
            "interval": [labels.get("low"), labels.get("high")],
            **(
                {}
                if self.guard_miou is None
                else {
                    "guard_miou": round(self.guard_miou, 2),
                    "baseline_guard_miou": (
                        None if self.baseline_guard_miou is None else round(self.baseline_guard_miou, 2)
                    ),
                }
            ),
            **{k: (None if v is None else round(v, 2)) for k, v in self.corrected.items()},
            "minutes": round(self.minutes, 2),
            "stopped": self.stopped,
            "decision": self.decision,
        }


@dataclass(frozen=True)
class Start:
    """Where a run starts: the parent's weights and the mask rule its children inherit."""

    parent: str | None  # the version's name; None from ImageNet
    tag: str  # names the run folder
    state: dict | None
    arch: str
    threshold: float
    trim: int
    input_size: int


def resolve_start(store: WeightsStore, init: str | None, arch: str | None) -> Start:
    """``init`` (default: the current version; ``imagenet:ARCH``: the ImageNet backbone), grown
    into ``arch`` when it names a larger architecture (``lite0`` -> ``lite0r``)."""
    if init and init.startswith(IMAGENET):
        arch = get_architecture(arch or init[len(IMAGENET) :]).name
        return Start(
            None, init.replace(":", "-"), None, arch, default_threshold(arch), 0, get_architecture(arch).input_size
        )
    parent = store.load(init)
    state, tag = parent.state_dict, parent.version
    if arch and get_architecture(arch).name != parent.arch:
        state = grow_state(arch, state)
        tag += f"-as-{arch}"  # a grown network never resumes a plain fine-tune's checkpoint
    # A child is thresholded and trimmed as its parent was tuned, and works at its size.
    return Start(parent.version, tag, state, arch or parent.arch, parent.threshold, parent.meta.trim, parent.input_size)


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
        return None  # nothing is current yet: the first trained version wins


def _score_current(store: WeightsStore, object_sets: list, seed: int, device: str, clicks: int | None):
    """The current version (None if nothing is current yet) and its scores on each set."""
    incumbent = _current(store)
    if incumbent is None:
        return None, None
    base = set_scores(predictor_for(incumbent, device=device), object_sets, seed=seed, clicks=clicks)  # as served
    log.info(
        "current version scored", extra={"current": incumbent.version, "objects": [len(s or []) for s in object_sets]}
    )
    return incumbent, base


def _paired(plan: Plan, runs: list[dict], shipped: list, base: list | None, clicks: int | None):
    """``{clicks: (candidate, incumbent)}`` on the examined objects, in the plan's order, and the
    guard's pair (None without a guard); the incumbent's side is None when nothing was current."""
    cand = [r["scores"] for r in runs if "scores" in r] + ([shipped[0]] if plan.shipped.test else [])
    pairs = {}
    for key in [4] + ([clicks] if clicks else []):
        pairs[key] = (
            np.concatenate([c[key] for c in cand]),
            None if base is None else np.concatenate([b[key] for b in base[:-1]]),
        )
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
        out.append(
            f"only {n} validation object{'s' if n != 1 else ''}, fewer than {min_val_objects} "
            "(DEXTR_TRAIN_MIN_VAL_OBJECTS)"
        )
    return out


@dataclass(frozen=True)
class TrainRequest:
    """One run's inputs: the labels, where training starts and how the result is judged. Frozen and
    only read, so a caller may run the same request again (a killed run resumes where it stopped)."""

    refs: list[ObjectRef]  # the labelled objects
    source: dict  # where they came from, for the model card
    config: TrainConfig  # arch, threshold, trim and (unset) resolution follow the start
    init: str | None = None  # the version to start from (default: the current one); ``imagenet:ARCH``
    arch: str | None = None  # grow ``init`` into this larger architecture (``resolve_start``)
    name: str | None = None  # the new version's name (default: v1, v2, ...)
    guard: str | Path | None = None  # whole objects never trained on, the shipped model must not lose on
    folds: int = 0  # >= 2: cross-validate over the images, ship a model trained on all
    val_fraction: float = 0.1  # otherwise this share of the images is held out ...
    hold_out_objects: int | None = None  # ... or, by count, at least this many objects (``crossval.hold_out``)
    min_val_objects: int = 0  # fewer examined objects than this never promote
    keep_last: bool = False  # keep the last epoch instead of the best by validation
    fresh: bool = False  # discard the run folder instead of resuming it
    force: bool = False  # make the new version current even if it is worse
    rule: Rule = Rule()  # what "measurably worse" means (``decision.decide``)
    run_dir: str | Path | None = None  # checkpoints (default: under the store, keyed by start and labels)
    device: str = "auto"  # auto, cpu, cuda ...


def train_and_promote(
    request: TrainRequest, *, store: WeightsStore | None = None, listeners: Listeners | None = None
) -> Outcome:
    """Fine-tune ``request.init``, then make the result current unless ``request.rule`` finds it
    measurably worse than the current version (``decision.decide``); the version is kept either way.

    Cross-validated runs give each training its share of ``config.max_minutes``; ``listeners`` hear
    the stages and count epochs over all trainings. ``request`` is read, never changed."""
    store = store or WeightsStore.from_settings(Settings.from_env())
    guard_objects = load_guard(request.guard) if request.guard else None  # a bad folder fails before training
    start = resolve_start(store, request.init, request.arch)
    config = _config_from(start, request.config)
    plan = _plan(request, config.val_objects)
    run_dir = _run_folder(request, store, start)
    clicks = CORRECTION_CLICKS if get_architecture(start.arch).corrections else None
    stage = Reporter(config, plan, listeners or Listeners())
    stage.planned()
    runner = PlanRunner(
        config, plan, run_dir, start.state, request.device, guard_objects, stage, clicks, request.keep_last
    )
    runner.prepare()  # a bad --freeze or a run folder of other settings fails before minutes of scoring
    exam_sets = [list(as_eval_objects(p.test)) for p in plan.examined]
    stage.stage("scoring the current version")
    incumbent, base = _score_current(store, exam_sets + [guard_objects], config.seed, request.device, clicks)
    current = incumbent.version if incumbent else None
    runs, state = runner.run_all(exam_sets)
    scoring = time.monotonic()
    stage.stage("scoring the new version")
    exams = [exam_sets[-1] if plan.shipped.test else None, guard_objects]
    shipped = _score_new(start, state, config, exams, request.device, clicks)
    decision = _decide(request, plan, runs, shipped, base, clicks, current)
    minutes = (sum(r["seconds"] for r in runs) + time.monotonic() - scoring) / 60
    metrics = outcome_metrics(decision, current, clicks)
    card = model_card(
        source=request.source,
        config=config,
        plan=plan,
        runs=runs,
        decision=decision,
        metrics=metrics,
        parent=start.parent or request.init,
        guard=request.guard,
        guard_objects=guard_objects,
        minutes=minutes,
        keep_last=request.keep_last,
        freeze_bn=runner.freeze_bn,
        device=runner.device,
    )
    version = _store_version(store, request, start, state, config, card, metrics, decision.promoted)
    shutil.rmtree(run_dir, ignore_errors=True)  # finished: the next run starts fresh
    log.info(
        "training finished",
        extra={"version": version.name, "promoted": decision.promoted, "decision": decision.sentence, **metrics},
    )
    return _outcome(version, decision, incumbent, runs[-1], minutes, clicks)


def _store_version(
    store: WeightsStore,
    request: TrainRequest,
    start: Start,
    state: dict,
    config: TrainConfig,
    card: dict,
    metrics: dict,
    promoted: bool,
):
    """The new version in the store, with the start's mask rule and size; current if promoted."""
    return store.add_version(
        state,
        start.arch,
        name=request.name,
        parent=start.parent,
        metrics=metrics,
        card=card,
        threshold=start.threshold,
        trim=start.trim,
        input_size=config.resolution,
        make_current=promoted,
    )


def _score_new(start: Start, state: dict, config: TrainConfig, exams: list, device: str, clicks) -> list:
    """The shipped model's scores on the team's held-out objects (if any) and on the guard."""
    size = cast(int, config.resolution)  # _config_from set it (the start's size unless one was asked for)
    return version_scores(
        start.arch, state, size, start.threshold, start.trim, exams, seed=config.seed, device=device, clicks=clicks
    )


def _config_from(start: Start, config: TrainConfig) -> TrainConfig:
    """A copy of ``config`` for the start's network: it validates with the mask rule the version will
    be served with, and works at the start's size unless a resolution is asked for."""
    return replace(
        config,
        arch=start.arch,
        threshold=start.threshold,
        trim=start.trim,
        resolution=config.resolution or start.input_size,
    )


def _plan(request: TrainRequest, val_objects: int) -> Plan:
    """Cross-validation when asked for and the labels span 2 images or more; otherwise a hold-out split."""
    refs = request.refs
    if request.folds >= 2 and len({r.image for r in refs}) >= 2:
        return cross_validation(refs, request.folds)
    return hold_out(refs, request.val_fraction, request.hold_out_objects, val_objects)


def _run_folder(request: TrainRequest, store: WeightsStore, start: Start) -> Path:
    """The checkpoint folder, keyed by the start and the labels' content so that only the same run
    resumes it; emptied first for a ``fresh`` run (checkpoints and finished folds alike)."""
    run_dir = (
        Path(request.run_dir)
        if request.run_dir
        else store.root / "runs" / f"{start.tag}-{objects_key(request.refs)[:12]}"
    )
    if request.fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir


def _decide(
    request: TrainRequest,
    plan: Plan,
    runs: list[dict],
    shipped: list,
    base: list | None,
    clicks: int | None,
    current: str | None,
) -> Decision:
    """The verdict on both versions' scores paired object by object (``_paired``), blocked where
    they cannot decide (``_blockers``)."""
    pairs, guard_pair = _paired(plan, runs, shipped, base, clicks)
    return decide(
        *pairs[4],
        where=plan.where,
        guard=guard_pair,
        corrected=pairs.get(clicks),
        current=current,
        blockers=tuple(_blockers(plan, runs, request.min_val_objects)),
        force=request.force,
        rule=request.rule,
    )


def _outcome(version: Version, decision, incumbent, last: dict, minutes: float, clicks: int | None) -> Outcome:
    labels, guard = decision.exam("labels"), decision.exam("guard")
    corrected = {}
    six = decision.exam("labels after 2 corrections")
    if clicks and six is not None:
        corrected = {f"val_miou_{clicks}": six.candidate, f"baseline_val_miou_{clicks}": six.incumbent}
    return Outcome(
        version,
        decision.promoted,
        incumbent.version if incumbent else None,
        labels.incumbent if labels.incumbent is not None else float("nan"),
        labels.candidate,
        minutes,
        last["stopped"],
        guard.candidate if guard else None,
        guard.incumbent if guard else None,
        reason=decision.sentence,
        val_objects=labels.objects,
        epochs_done=last["epochs_done"],
        corrected=corrected,
        decision=decision.to_dict(),
    )
