"""The training loop: resumable, time-boxed, seeded, with early stopping on validation mIoU.

A run lives in one folder (``checkpoint.RunFolder``): the checkpoint is rewritten after every
epoch with the model, optimiser, epoch, best score and RNG state, so a killed run resumes where
it stopped. The clock (``minutes`` in the history, ``seconds`` in the result) counts every sitting
of a run, not only the last one.

A little over 300 lines: the loop, resuming and the simulated user of corrections networks share
one model, optimiser, clock and random state, so they stay one class.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..build import make_predictor
from ..data.objects import ObjectRef, load_object
from ..data.splits import spread
from ..errors import InputError
from ..models import HeadedDextr, build_model, get_architecture, load_state
from ..predictor import pick_device, warn_if_bf16_emulated
from .checkpoint import RunFolder, plain
from .corrections import simulate
from .ema import WeightAverage
from .loss import balanced_bce, correction_bce
from .parts import freeze_batchnorm, freeze_parts, lr_factor, param_groups
from .samples import Augment, make_sample
from .scoring import CORRECTION_CLICKS, score_objects

log = logging.getLogger(__name__)

PROGRESS_EVERY_STEPS = 10  # on_progress is called at least this often within an epoch ...
PROGRESS_EVERY_SECONDS = 5.0  # ... or after this long, whichever comes first


@dataclass
class TrainConfig:
    arch: str = "lite0"
    resolution: int | None = None  # default: the architecture's working size
    epochs: int = 10
    samples_per_epoch: int = 2000
    batch_size: int = 8
    lr: float = 1e-3  # decoder; the backbone gets lr * backbone_lr_scale
    backbone_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    max_minutes: float | None = None
    patience: int = 3  # epochs without validation gain before stopping
    val_objects: int = 200
    freeze_bn: bool | None = None  # default: freeze when fewer than 500 training objects
    seed: int = 0
    threshold: float = 0.5  # for validation masks; the parent version's threshold
    trim: int = 0  # and its boundary trim (PostProcess.trim)
    threads: int | None = None
    cpu_bf16: bool = False  # bf16 autocast on a CPU with native support (~30% faster steps)
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights
    freeze: tuple[str, ...] = ()  # top-level modules left as they are (weights and BatchNorm statistics)
    corrections: int = 3  # corrections architectures: 1 to this many simulated clicks per sample
    error_weight: float = 1.0  # corrections architectures: loss weight of the pixels pass 1 got wrong
    # Corrections architectures: which part trains. "head" learns the corrective clicks on a frozen
    # parent; "parent" fine-tunes the parent on the 4-click loss and keeps the head (a team's
    # retraining: its labels teach the extreme-point masks). None: "head" when growing from a plain
    # version, "parent" when the version already has a trained head.
    train_part: str | None = None
    augment: Augment = field(default_factory=Augment)


def train_part(config: TrainConfig, init_state: dict | None) -> str:
    """``head`` or ``parent``: what a corrections architecture trains (``TrainConfig.train_part``)."""
    if config.train_part is not None:
        if config.train_part not in ("head", "parent"):
            raise InputError(f"train part {config.train_part!r}: use head or parent")
        return config.train_part
    # A head just grown from a plain version has a zero last layer (it answers as its parent).
    out = (init_state or {}).get("head.out.weight")
    return "head" if out is None or not bool(out.any()) else "parent"


@dataclass
class TrainResult:
    state_dict: dict
    best_val_miou: float | None
    epochs_done: int
    steps: int
    seconds: float
    history: list[dict]
    stopped: str


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        train_refs: Sequence[ObjectRef],
        val_refs: Sequence[ObjectRef],
        run_dir: str | Path,
        init_state: dict | None = None,
        device: str = "auto",
        on_epoch: Callable[[dict], None] | None = None,
        guard_objects: Sequence | None = None,
        on_progress: Callable[[dict], None] | None = None,
    ):
        """``on_epoch`` gets each finished epoch's history row; ``on_progress`` gets
        ``{epoch, step, steps_per_epoch, loss}`` within an epoch (see PROGRESS_EVERY_*)."""
        self.cfg = config
        self.guard_objects = list(guard_objects or [])
        self.train_refs = list(train_refs)
        self.val_refs = spread(list(val_refs), config.val_objects)
        if not self.train_refs:
            raise ValueError("no training objects")
        self.folder = RunFolder(run_dir)
        self.run_dir = self.folder.path
        self.device = pick_device(device)
        if config.cpu_bf16 and self.device.type == "cpu":
            warn_if_bf16_emulated("bf16 training (--bf16)")
        self.resolution = config.resolution or get_architecture(config.arch).input_size
        self.on_epoch = on_epoch
        self.on_progress = on_progress
        if config.threads:
            torch.set_num_threads(config.threads)
        self.model = self._build_model(config, init_state)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, config.lr, config.backbone_lr_scale), weight_decay=config.weight_decay
        )
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        # A trained parent is a good first member of the average; an ImageNet start is not.
        self.ema = WeightAverage(self.model, config.ema_decay, warmup=init_state is None) if config.ema_decay else None
        self._eval_model = copy.deepcopy(self.model) if self.ema else None
        if isinstance(self.model, HeadedDextr):  # lite0h: one frozen backbone pass per batch and its click rounds
            self.model.reuse_base = self.part == "head"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        self.epoch, self.step, self.best, self.bad_epochs = 0, 0, -1.0, 0
        self.history: list[dict] = []
        self.seconds_before = 0.0  # training time of earlier sittings of this run
        self.resumed_from_epoch: int | None = None
        self._started = time.monotonic()
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self._resume()

    def _build_model(self, config: TrainConfig, init_state: dict | None) -> torch.nn.Module:
        """The network to train, on the device, with the parts that stay fixed frozen.

        A corrections network trains either its corrector (pass 1 stays exactly the parent's) or its
        parent alone (``train_part``): never both at once, so each learns what it is scored on."""
        self.takes_corrections = get_architecture(config.arch).corrections
        if self.takes_corrections and init_state is None:
            raise InputError(f"{config.arch} grows from a trained version: give --init VERSION, not ImageNet")
        self.part = train_part(config, init_state) if self.takes_corrections else None
        self.corrections = self.part == "head"  # simulated clicks and the corrections loss
        model = build_model(config.arch, imagenet=init_state is None)
        if init_state is not None:
            load_state(model, init_state)
        # channels-last: the convolutions' own layout on oneDNN and cuDNN; a training step on 2 CPU
        # cores takes about 0.6x the time of the default layout (the same arithmetic, reordered).
        model.to(self.device)
        model.to(memory_format=torch.channels_last)
        self.freeze_bn = config.freeze_bn if config.freeze_bn is not None else len(self.train_refs) < 500
        fixed = {"head": ("base",), "parent": ("head",), None: ()}[self.part]
        if self.part == "parent":
            model.base.requires_grad_(True)
        frozen = tuple(config.freeze) + tuple(n for n in fixed if n not in config.freeze)
        self.frozen_modules = freeze_parts(model, frozen)
        return model

    @property
    def checkpoint_path(self) -> Path:
        return self.folder.checkpoint_path

    def _resume(self) -> None:
        ck = self.folder.read_checkpoint({k: getattr(self.cfg, k) for k in ("arch", "resolution", "freeze")})
        if ck is None:
            return
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.epoch, self.step, self.best = ck["epoch"], ck["step"], ck["best"]
        self.bad_epochs, self.history = ck["bad_epochs"], ck["history"]
        self.seconds_before = ck.get("seconds", self.history[-1]["minutes"] * 60 if self.history else 0.0)
        if self.ema is not None:  # a run started without an average starts one from here
            if ck.get("ema") is not None:
                self.ema.state, self.ema.updates = ck["ema"], ck.get("ema_updates", self.step)
            else:
                self.ema.state = WeightAverage(self.model, self.cfg.ema_decay).state
        self.rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        self.resumed_from_epoch = self.epoch
        log.info("resumed training", extra={"epoch": self.epoch, "step": self.step, "run_dir": str(self.run_dir)})

    def _save(self) -> None:
        self.folder.save_checkpoint(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch,
                "step": self.step,
                "best": self.best,
                "bad_epochs": self.bad_epochs,
                "history": plain(self.history),
                "rng": plain(self.rng.bit_generator.state),
                "torch_rng": torch.get_rng_state(),
                "config": plain(asdict(self.cfg)),
                "seconds": self.elapsed(),
                "ema": self.ema.state if self.ema else None,
                "ema_updates": self.ema.updates if self.ema else 0,
            }
        )

    def elapsed(self) -> float:
        """Seconds this run has trained, over all its sittings."""
        return self.seconds_before + time.monotonic() - self._started

    def _batch(self):
        xs, ys = [], []
        while len(xs) < self.cfg.batch_size:
            ref = self.train_refs[int(self.rng.integers(len(self.train_refs)))]
            image, mask = load_object(ref)
            sample = make_sample(image, mask, self.resolution, self.cfg.augment, self.rng)
            if sample is not None:
                xs.append(sample[0])
                ys.append(sample[1])
        # (B, H, W, C) is already channels-last: the permuted view keeps it, and the network's layout.
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).to(self.device, memory_format=torch.channels_last)
        y = torch.from_numpy(np.stack(ys))[:, None].to(self.device)
        if self.corrections:
            x = simulate(self._probabilities, x, y, self.cfg.corrections, self.cfg.threshold, self.rng)
        return x, y

    @torch.no_grad()
    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, S, S)`` probabilities without a gradient, in eval mode (the simulated user's view)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                return torch.sigmoid(self.model(x).float())[:, 0]
        finally:
            self.model.train(was_training)
            self._hold_frozen()

    def _hold_frozen(self) -> None:
        """Keep BatchNorm statistics (``freeze_bn``) and the frozen modules as loaded, even in train mode."""
        if self.freeze_bn:
            freeze_batchnorm(self.model)
        for m in self.frozen_modules:
            m.eval()

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``balanced_bce``; a corrections network's pass 2 may weight pass 1's errors more
        (``error_weight``; the 7th input channel is pass 1's probabilities x 255)."""
        if not self.corrections:
            return balanced_bce(logits, y)
        previous = x[:, 6] > self.cfg.threshold * 255.0
        return correction_bce(logits, y, previous, self.cfg.error_weight)

    def _set_lr(self, total_steps: int) -> None:
        f = lr_factor(self.step, self.cfg.warmup_steps, total_steps)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.cpu_bf16)

    def result_model(self) -> torch.nn.Module:
        """The weights this run validates and ships: the moving average where one is kept."""
        if self.ema is None or self._eval_model is None:  # the copy exists exactly when an average is kept
            return self.model
        self._eval_model.load_state_dict(self.ema.state)
        return self._eval_model

    def scores(self) -> dict:
        """``val_miou`` and ``guard_miou`` (None where there is nothing to score) from one predictor;
        a corrections network adds ``val_miou_6`` and ``guard_miou_6`` (after 2 corrective clicks).

        Scored as the model will be used: the version records the training resolution as its
        working size, and keeps its parent's threshold and trim.
        """
        if not self.val_refs and not self.guard_objects:
            return {"val_miou": None}
        predictor = make_predictor(
            self.result_model(), self.cfg.arch, self.resolution, self.cfg.threshold, self.cfg.trim, device=self.device
        )
        return score_objects(
            predictor,
            self.val_refs,
            self.guard_objects,
            self.cfg.seed,
            CORRECTION_CLICKS if self.takes_corrections else None,
        )

    def selection_key(self) -> str:
        """The score the best epoch is chosen on: corrections networks by their corrected masks."""
        return f"val_miou_{CORRECTION_CLICKS}" if self.corrections else "val_miou"

    def run(self) -> TrainResult:
        """Train until the epochs are done, validation stops improving for ``patience`` epochs or
        ``max_minutes`` of this sitting pass; the best epoch's weights (by validation) are the result."""
        cfg = self.cfg
        steps_per_epoch = max(1, cfg.samples_per_epoch // cfg.batch_size)
        start = self._started = time.monotonic()
        deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else None
        stopped = "epochs"
        while self.epoch < cfg.epochs:
            losses = self._train_epoch(steps_per_epoch, deadline)
            timed_out = bool(deadline and time.monotonic() > deadline)
            if timed_out and len(losses) < steps_per_epoch:
                stopped = "time budget"
                self._save()  # keep the partial epoch's progress for a resumed run
                break
            self._end_epoch(losses)
            if self.bad_epochs >= cfg.patience:
                stopped = "early stop"
                break
            if timed_out:
                stopped = "time budget"
                break
        state = self.folder.read_best()
        if state is None:
            state = self.result_model().state_dict()
        return TrainResult(
            state_dict=state,
            best_val_miou=self.best if self.best >= 0 else None,
            epochs_done=self.epoch,
            steps=self.step,
            seconds=self.elapsed(),
            history=self.history,
            stopped=stopped,
        )

    def _train_epoch(self, steps_per_epoch: int, deadline: float | None) -> list[float]:
        """The losses of one epoch's steps, fewer when the deadline passes: the caller tells a cut
        epoch by its length."""
        self.model.train()
        self._hold_frozen()
        total_steps = steps_per_epoch * self.cfg.epochs
        losses: list[float] = []
        reported, reported_at = 0, time.monotonic()
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
            unit="step",
            dynamic_ncols=True,
            leave=False,
            disable=None,
        )
        for _ in bar:
            losses.append(self._train_step(total_steps))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if self.on_progress and (
                len(losses) - reported >= PROGRESS_EVERY_STEPS
                or time.monotonic() - reported_at >= PROGRESS_EVERY_SECONDS
            ):
                reported, reported_at = len(losses), time.monotonic()
                self.on_progress(
                    {
                        "epoch": self.epoch + 1,
                        "step": len(losses),
                        "steps_per_epoch": steps_per_epoch,
                        "loss": float(np.mean(losses[-50:])),
                    }
                )
            if deadline and time.monotonic() > deadline:
                break
        bar.close()
        return losses

    def _train_step(self, total_steps: int) -> float:
        """One optimiser step on a fresh batch (the moving average follows it); the batch's loss."""
        self._set_lr(total_steps)
        x, y = self._batch()
        with self._autocast():
            loss = self.loss(self.model(x).float(), x, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return loss.item()

    def _end_epoch(self, losses: list[float]) -> None:
        """Validate a finished epoch, record its history row, keep its weights if they are the best so
        far, and checkpoint, so that a run killed from here on resumes after this epoch."""
        self.epoch += 1
        scores = {k: None if v is None else float(v) for k, v in self.scores().items()}
        row = {
            "epoch": self.epoch,
            "step": self.step,
            "loss": float(np.mean(losses)),
            "val_miou": scores["val_miou"],
            "minutes": self.elapsed() / 60,
        }
        # The guard is watched, not used to choose: validation picks the best epoch.
        row.update({k: v for k, v in scores.items() if k != "val_miou" and v is not None})
        self.history.append(row)
        log.info("epoch done", extra=row)
        self._keep_if_best(scores.get(self.selection_key()))
        self._save()
        if self.on_epoch:
            self.on_epoch(row)

    def _keep_if_best(self, val: float | None) -> None:
        """Save the weights when validation improved (always without validation); else count a bad epoch."""
        if val is None or val > self.best:
            self.best = val if val is not None else self.best
            self.bad_epochs = 0
            self.folder.save_best(self.result_model().state_dict())
        else:
            self.bad_epochs += 1
