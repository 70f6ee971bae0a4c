"""Train a run's plan (``crossval.Plan``) part after part, and tell the caller where it stands.

Fold models are scored on their own objects as soon as they finish, and the scores are kept in
the fold's folder, so a run killed in a later part resumes there without training a fold again
(the part in progress resumes from its checkpoint). The last part's weights become the version.
Progress counts epochs over all the parts, so a status shows one bar for the whole run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

from ..data.objects import objects_key
from .crossval import Part, Plan, part_config, part_epochs, read_scores, write_scores
from .scoring import CLICK_SETS, version_scores
from .trainer import TrainConfig, Trainer

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listeners:
    """Who hears a run as it goes: ``on_plan`` its shape once planned (``epochs``: the total over
    its trainings; ``folds``: 0 for a hold-out split), ``on_stage`` the stage names, ``on_epoch``
    each finished epoch's row, ``on_progress`` steps within an epoch, ``on_resume`` the epoch a
    run resumes at."""

    on_plan: Callable[[dict], None] | None = None
    on_stage: Callable[[str], None] | None = None
    on_epoch: Callable[[dict], None] | None = None
    on_progress: Callable[[dict], None] | None = None
    on_resume: Callable[[int], None] | None = None


class Reporter:
    """Stages, epochs and steps of every part, as one run: epoch numbers go on from part to part
    (``epochs`` is the run's total) and each event names its ``part``."""

    def __init__(self, config: TrainConfig, plan: Plan, listeners: Listeners):
        self.part_epochs = part_epochs(config, plan)
        self.total = sum(self.part_epochs)
        self.listeners = listeners
        self.offset, self.part = 0, plan.parts[0].name
        self.folds = plan.scheme.get("folds", 0)

    def planned(self) -> None:
        """Tell the listeners the run's shape, before its first training (and the minutes of
        scoring the current version) begin."""
        if self.listeners.on_plan:
            self.listeners.on_plan({"epochs": self.total, "folds": self.folds})

    def stage(self, name: str) -> None:
        if self.listeners.on_stage:
            self.listeners.on_stage(name)

    def begin(self, index: int, part: Part, trainer: Trainer, stage: str) -> None:
        self.offset, self.part = sum(self.part_epochs[:index]), part.name
        self.stage(stage)
        if trainer.resumed_from_epoch is not None and self.listeners.on_resume:
            self.listeners.on_resume(self.offset + trainer.resumed_from_epoch)

    def epoch(self, row: dict) -> None:
        if self.listeners.on_epoch:
            self.listeners.on_epoch(
                {**row, "epoch": self.offset + row["epoch"], "epochs": self.total, "part": self.part}
            )

    def progress(self, fields: dict) -> None:
        if self.listeners.on_progress:
            self.listeners.on_progress(
                {**fields, "epoch": self.offset + fields["epoch"], "epochs": self.total, "part": self.part}
            )


class PlanRunner:
    """The trainings of one plan, with the same settings each (a fold model's schedule shorter:
    ``crossval.part_config``), the time budget shared out in proportion to their epochs."""

    def __init__(
        self,
        config: TrainConfig,
        plan: Plan,
        run_dir: Path,
        init_state: dict | None,
        device: str,
        guard_objects: list | None,
        reporter: Reporter,
        clicks: int | None,
        keep_last: bool,
    ):
        self.config = config
        epochs = part_epochs(config, plan)
        self.minutes = [config.max_minutes * e / sum(epochs) if config.max_minutes else None for e in epochs]
        self.plan, self.run_dir, self.init_state, self.device_name = plan, Path(run_dir), init_state, device
        self.guard_objects, self.reporter, self.clicks, self.keep_last = guard_objects, reporter, clicks, keep_last
        self._built: dict[int, Trainer] = {}
        self.freeze_bn: bool | None = None  # the last built trainer's
        self.device: torch.device | None = None

    def folder(self, part: Part) -> Path:
        return self.run_dir / part.folder if part.folder else self.run_dir

    def part_config(self, index: int) -> TrainConfig:
        """The settings the ``index``-th part trains with: its schedule and its share of the time budget."""
        return replace(part_config(self.config, self.plan.parts[index]), max_minutes=self.minutes[index])

    def key(self, part: Part) -> dict:
        """What a kept fold's scores depend on: a resumed run with other settings trains it again."""
        c = part_config(self.config, part)  # its schedule (the time budget is not part of the key)
        return {
            "objects": objects_key(part.train + part.test),
            "epochs": c.epochs,
            "samples": c.samples_per_epoch,
            "lr": c.lr,
            "seed": c.seed,
            "resolution": c.resolution,
            "click_sets": CLICK_SETS,
            "clicks": self.clicks,
        }

    def _kept(self, part: Part) -> dict | None:
        """A finished fold's record (never the shipped part: its weights are needed)."""
        return None if part is self.plan.shipped or not part.test else read_scores(self.folder(part), self.key(part))

    def trainer(self, index: int) -> Trainer:
        if index not in self._built:
            part = self.plan.parts[index]
            self._built[index] = Trainer(
                self.part_config(index),
                part.train,
                part.test if part.validate else [],
                self.folder(part),
                init_state=self.init_state,
                device=self.device_name,
                on_epoch=self.reporter.epoch,
                on_progress=self.reporter.progress,
                guard_objects=self.guard_objects if part.validate else None,
            )
            self.freeze_bn, self.device = self._built[index].freeze_bn, self._built[index].device
        return self._built[index]

    def prepare(self) -> None:
        """Build the first training left to do, so bad settings fail before any scoring."""
        todo = next(i for i, part in enumerate(self.plan.parts) if self._kept(part) is None)
        self.trainer(todo)

    def run_all(self, exam_sets: list[list]) -> tuple[list[dict], dict]:
        """Every part's record (``part``, ``epochs_done``, ``stopped``, ``seconds``, ``history``, and
        a fold's ``scores``), and the weights of the last part."""
        runs: list[dict] = []
        state = None
        examined = self.plan.examined
        for index, part in enumerate(self.plan.parts):
            kept = self._kept(part)
            if kept is not None:
                log.info("fold already trained and scored", extra={"part": part.name})
                runs.append({**kept, "part": part})
                continue
            runs.append(self._train(index, part))
            state = runs[-1].pop("state")
            if part.test and part is not self.plan.shipped:
                self.reporter.stage(f"scoring {part.name}")
                runs[-1]["scores"] = version_scores(
                    self.config.arch,
                    state,
                    cast(int, self.config.resolution),  # set from the start version (promotion._config_from)
                    self.config.threshold,
                    self.config.trim,
                    [exam_sets[examined.index(part)]],
                    seed=self.config.seed,
                    device=self.device_name,
                    clicks=self.clicks,
                )[0]
                write_scores(
                    self.folder(part),
                    self.key(part),
                    runs[-1]["scores"],
                    **{k: runs[-1][k] for k in ("epochs_done", "stopped", "seconds")},
                )
        return runs, cast(dict, state)  # the shipped part always trains: _kept never keeps it

    def _train(self, index: int, part: Part) -> dict:
        trainer = self.trainer(index)
        many = len(self.plan.parts) > 1
        stage = (
            "training"
            if not many
            else f"training on {part.name}"
            if part is self.plan.shipped
            else f"training {part.name}"
        )
        self.reporter.begin(index, part, trainer, stage)
        result = trainer.run()
        state = result.state_dict
        if self.keep_last and part.validate and result.epochs_done:
            state = {k: v.detach().cpu().clone() for k, v in trainer.result_model().state_dict().items()}
        del self._built[index]  # one network in memory at a time
        return {
            "part": part,
            "state": state,
            "epochs_done": result.epochs_done,
            "stopped": result.stopped,
            "seconds": result.seconds,
            "history": result.history,
        }


__all__ = ["Listeners", "PlanRunner", "Reporter"]
