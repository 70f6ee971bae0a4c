"""The training loop: resumable, time-boxed, seeded, with early stopping on validation mIoU.

A run lives in one folder (``run_dir``): ``checkpoint.pt`` is rewritten atomically after every
epoch with the model, optimiser, epoch, best score and RNG state, so a killed run resumes
where it stopped. ``best.pt`` holds the best validation weights. The clock (``minutes`` in the
history, ``seconds`` in the result) counts every sitting of a run, not only the last one.

Both files hold tensors and plain data only and are read with ``weights_only=True``: a file
planted in a run folder must never run code, and one that cannot be read is refused in one line.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import InputError
from ..evaluation.runner import evaluate_objects
from ..models import build_model, get_architecture, load_state
from ..postprocess import PostProcess
from ..predictor import DextrPredictor, pick_device, warn_if_bf16_emulated
from .corrections import simulate
from .datasets import ObjectRef, as_eval_objects, load_object, spread
from .loss import balanced_bce, correction_bce
from .samples import Augment, make_sample

log = logging.getLogger(__name__)

PROGRESS_EVERY_STEPS = 10       # on_progress is called at least this often within an epoch ...
PROGRESS_EVERY_SECONDS = 5.0    # ... or after this long, whichever comes first


@dataclass
class TrainConfig:
    arch: str = "lite0"
    resolution: int | None = None      # default: the architecture's working size
    epochs: int = 10
    samples_per_epoch: int = 2000
    batch_size: int = 8
    lr: float = 1e-3                   # decoder; the backbone gets lr * backbone_lr_scale
    backbone_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    max_minutes: float | None = None
    patience: int = 3                  # epochs without validation gain before stopping
    val_objects: int = 200
    freeze_bn: bool | None = None      # default: freeze when fewer than 500 training objects
    seed: int = 0
    threshold: float = 0.5             # for validation masks; the parent version's threshold
    trim: int = 0                      # and its boundary trim (PostProcess.trim)
    threads: int | None = None
    cpu_bf16: bool = False             # bf16 autocast on a CPU with native support (~30% faster steps)
    ema_decay: float = 0.0             # > 0: validate and keep an exponential moving average of the weights
    freeze: tuple[str, ...] = ()       # top-level modules left as they are (weights and BatchNorm statistics)
    corrections: int = 3               # corrections architectures: 1 to this many simulated clicks per sample
    error_weight: float = 1.0          # corrections architectures: loss weight of the pixels pass 1 got wrong
    augment: Augment = field(default_factory=Augment)


@dataclass
class TrainResult:
    state_dict: dict
    best_val_miou: float | None
    epochs_done: int
    steps: int
    seconds: float
    history: list[dict]
    stopped: str


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
        import pickle

        why = ("it holds objects other than tensors and plain data" if isinstance(exc, pickle.UnpicklingError)
               else f"it is truncated or corrupt ({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]})")
        raise InputError(f"cannot resume from {path}: {why}; delete {run_dir} or run `train --fresh` "
                         "to start this run over") from None


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# A corrections version is also scored after 2 corrective clicks on top of the 4 extreme points.
CORRECTION_CLICKS = 6


def _miou(result, clicks: int | None = None) -> float:
    value = result.miou_by_clicks()[clicks] if clicks else result.miou
    return float(value) if value is not None else float("nan")


def score_objects(predictor: DextrPredictor, val_refs: Sequence[ObjectRef], guard_objects: Sequence | None,
                  seed: int = 0, clicks: int | None = None) -> dict:
    """``val_miou`` and ``guard_miou`` (percent; None where there is nothing to score), as
    ``evaluate`` computes them; with ``clicks`` (e.g. 6) also ``val_miou_6`` and ``guard_miou_6``,
    the mIoU after that many clicks, from the same runs."""
    out = {}
    runs = {"val_miou": (as_eval_objects(list(val_refs)), seed) if val_refs else None,
            "guard_miou": (guard_objects, 0) if guard_objects else None}
    for key, run in runs.items():
        result = None if run is None else evaluate_objects(predictor, run[0], seed=run[1], progress=False,
                                                           warmup=False, max_clicks=clicks or 4)
        out[key] = None if result is None else _miou(result)
        if clicks:
            out[f"{key}_{clicks}"] = None if result is None else _miou(result, clicks)
    return out


def validation_miou(predictor: DextrPredictor, refs: Sequence[ObjectRef], seed: int = 0) -> float:
    """mIoU (percent) with the exact extreme points of each object, as ``evaluate`` computes it."""
    return score_objects(predictor, refs, None, seed)["val_miou"]


def guard_miou(predictor: DextrPredictor, objects: Sequence) -> float:
    """mIoU (percent) on a guard folder's objects (loaded once by ``promotion.load_guard``)."""
    return score_objects(predictor, [], objects)["guard_miou"]


def _freeze_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


def freeze_parts(model: torch.nn.Module, names: Sequence[str]) -> list[torch.nn.Module]:
    """Stop training the named top-level parts (e.g. ``backbone``, ``decoder``) altogether.

    Why: to train a new part (``lite0r``'s refiner) on data whose style the trained trunk should
    not drift towards (bsds-lite0-v3's card, runs 5 and 6). The caller keeps the returned modules
    in eval mode so their BatchNorm statistics stay as they are.
    """
    children = {n: m for n, m in model.named_children() if m is not None}
    unknown = [n for n in names if n not in children]
    if unknown:
        raise InputError(f"cannot freeze {', '.join(unknown)}: this network's parts are {', '.join(children)}")
    modules = [children[n] for n in names]
    for m in modules:
        m.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError("nothing left to train: every part of the network is frozen")
    return modules


def is_backbone(name: str) -> bool:
    """A parameter of a pretrained trunk (lower learning rate), also inside a composite
    (``corrector.backbone.*``); ResNet's trunk is ``conv1``, ``bn1`` and ``layer1``-``layer4``."""
    parts = name.split(".")
    if "backbone" in parts[:-1]:
        return True
    return parts[0] in ("conv1", "bn1") or (parts[0].startswith("layer") and parts[0] != "layer5")


class WeightAverage:
    """Exponential moving average of a model's weights and BatchNorm statistics.

    Why: with batches of 8 the weights wander from step to step, and checkpoints a few hundred
    steps apart score differently on the benchmarks; the average is a smoother, usually better model.
    With ``warmup`` the decay after ``n`` updates is ``min(decay, (1 + n) / (10 + n))``: a run from
    ImageNet starts with a random decoder, which a plain average would carry for a thousand steps.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = False):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie between 0 and 1, got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        for key, value in model.state_dict().items():
            avg = self.state[key]
            if avg.is_floating_point():
                avg.lerp_(value.detach(), weight)
            else:
                avg.copy_(value)
        self.updates += 1


class Trainer:
    def __init__(self, config: TrainConfig, train_refs: Sequence[ObjectRef], val_refs: Sequence[ObjectRef],
                 run_dir: str | Path, init_state: dict | None = None, device: str = "auto",
                 on_epoch: Callable[[dict], None] | None = None, guard_objects: Sequence | None = None,
                 on_progress: Callable[[dict], None] | None = None):
        """``on_epoch`` gets each finished epoch's history row; ``on_progress`` gets
        ``{epoch, step, steps_per_epoch, loss}`` within an epoch (see PROGRESS_EVERY_*)."""
        self.cfg = config
        self.guard_objects = list(guard_objects or [])
        self.train_refs = list(train_refs)
        self.val_refs = spread(list(val_refs), config.val_objects)
        if not self.train_refs:
            raise ValueError("no training objects")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = pick_device(device)
        if config.cpu_bf16 and self.device.type == "cpu":
            warn_if_bf16_emulated("bf16 training (--bf16)")
        self.resolution = config.resolution or get_architecture(config.arch).input_size
        self.on_epoch = on_epoch
        self.on_progress = on_progress
        if config.threads:
            torch.set_num_threads(config.threads)
        # A corrections network trains only its corrector: pass 1 stays exactly the parent's.
        self.corrections = get_architecture(config.arch).corrections
        if self.corrections and init_state is None:
            raise InputError(f"{config.arch} grows from a trained version: give --init VERSION, not ImageNet")
        self.model = build_model(config.arch, imagenet=init_state is None)
        if init_state is not None:
            load_state(self.model, init_state)
        self.model.to(self.device)
        freeze = config.freeze_bn if config.freeze_bn is not None else len(self.train_refs) < 500
        self.freeze_bn = freeze
        frozen = tuple(config.freeze) + (("base",) if self.corrections and "base" not in config.freeze else ())
        self.frozen_modules = freeze_parts(self.model, frozen)
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        backbone = [p for n, p in trainable if is_backbone(n)]
        ids = {id(p) for p in backbone}
        head = [p for _, p in trainable if id(p) not in ids]
        self.optimizer = torch.optim.AdamW(
            [{"params": backbone, "lr": config.lr * config.backbone_lr_scale}, {"params": head, "lr": config.lr}],
            weight_decay=config.weight_decay)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        # A trained parent is a good first member of the average; an ImageNet start is not.
        self.ema = (WeightAverage(self.model, config.ema_decay, warmup=init_state is None)
                    if config.ema_decay else None)
        self._eval_model = copy.deepcopy(self.model) if self.ema else None
        if hasattr(self.model, "reuse_base"):   # lite0h: one frozen backbone pass per batch and its click rounds
            self.model.reuse_base = True
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        self.epoch, self.step, self.best, self.bad_epochs = 0, 0, -1.0, 0
        self.history: list[dict] = []
        self.seconds_before = 0.0   # training time of earlier sittings of this run
        self.resumed_from_epoch: int | None = None
        self._started = time.monotonic()
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self._resume()

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _resume(self) -> None:
        if not self.checkpoint_path.exists():
            return
        ck = read_run_file(self.checkpoint_path, self.run_dir)
        needed = ("model", "optimizer", "epoch", "step", "best", "bad_epochs", "history", "rng", "torch_rng")
        if not isinstance(ck, dict) or any(k not in ck for k in needed) or not isinstance(ck.get("config"), dict):
            raise InputError(f"cannot resume from {self.checkpoint_path}: it is not a training checkpoint; "
                             f"delete {self.run_dir} or run `train --fresh` to start this run over")
        before = {k: ck.get("config", {}).get(k) for k in ("arch", "resolution", "freeze")}
        now = {k: getattr(self.cfg, k) for k in before}
        before["freeze"] = tuple(before["freeze"] or ())
        if before != now:
            raise InputError(f"{self.run_dir} holds a run with other settings ({before} vs {now}): "
                             "delete that folder or give another --run-dir")
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.epoch, self.step, self.best = ck["epoch"], ck["step"], ck["best"]
        self.bad_epochs, self.history = ck["bad_epochs"], ck["history"]
        self.seconds_before = ck.get("seconds", self.history[-1]["minutes"] * 60 if self.history else 0.0)
        if self.ema is not None:   # a run started without an average starts one from here
            if ck.get("ema") is not None:
                self.ema.state, self.ema.updates = ck["ema"], ck.get("ema_updates", self.step)
            else:
                self.ema.state = WeightAverage(self.model, self.cfg.ema_decay).state
        self.rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        self.resumed_from_epoch = self.epoch
        log.info("resumed training", extra={"epoch": self.epoch, "step": self.step, "run_dir": str(self.run_dir)})

    def _save(self) -> None:
        _atomic_save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                      "epoch": self.epoch, "step": self.step, "best": self.best, "bad_epochs": self.bad_epochs,
                      "history": plain(self.history), "rng": plain(self.rng.bit_generator.state),
                      "torch_rng": torch.get_rng_state(), "config": plain(asdict(self.cfg)),
                      "seconds": self.elapsed(),
                      "ema": self.ema.state if self.ema else None,
                      "ema_updates": self.ema.updates if self.ema else 0}, self.checkpoint_path)

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
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).to(self.device)
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
            if self.freeze_bn:
                _freeze_bn(self.model)
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
        if self.step < self.cfg.warmup_steps:
            f = (self.step + 1) / self.cfg.warmup_steps
        else:
            f = 0.5 * (1 + math.cos(math.pi * min(1.0, self.step / max(total_steps, 1))))
            f = max(f, 0.02)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.cpu_bf16)

    def result_model(self) -> torch.nn.Module:
        """The weights this run validates and ships: the moving average where one is kept."""
        if self.ema is None:
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
        predictor = DextrPredictor(self.result_model(), self.resolution, threshold=self.cfg.threshold,
                                   postprocess=PostProcess(trim=self.cfg.trim), device=self.device)
        return score_objects(predictor, self.val_refs, self.guard_objects, self.cfg.seed,
                             CORRECTION_CLICKS if self.corrections else None)

    def selection_key(self) -> str:
        """The score the best epoch is chosen on: corrections networks by their corrected masks."""
        return f"val_miou_{CORRECTION_CLICKS}" if self.corrections else "val_miou"

    def run(self) -> TrainResult:
        cfg = self.cfg
        steps_per_epoch = max(1, cfg.samples_per_epoch // cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        start = self._started = time.monotonic()
        deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else None
        stopped = "epochs"
        while self.epoch < cfg.epochs:
            self.model.train()
            if self.freeze_bn:
                _freeze_bn(self.model)
            for m in self.frozen_modules:
                m.eval()
            losses = []
            reported, reported_at = 0, time.monotonic()
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="step",
                       dynamic_ncols=True, leave=False, disable=None)
            for _ in bar:
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
                losses.append(loss.item())
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
                if self.on_progress and (len(losses) - reported >= PROGRESS_EVERY_STEPS
                                         or time.monotonic() - reported_at >= PROGRESS_EVERY_SECONDS):
                    reported, reported_at = len(losses), time.monotonic()
                    self.on_progress({"epoch": self.epoch + 1, "step": len(losses),
                                      "steps_per_epoch": steps_per_epoch, "loss": float(np.mean(losses[-50:]))})
                if deadline and time.monotonic() > deadline:
                    break
            bar.close()
            timed_out = bool(deadline and time.monotonic() > deadline)
            if timed_out and len(losses) < steps_per_epoch:
                stopped = "time budget"
                self._save()   # keep the partial epoch's progress for a resumed run
                break
            self.epoch += 1
            scores = {k: None if v is None else float(v) for k, v in self.scores().items()}
            val = scores.get(self.selection_key())
            row = {"epoch": self.epoch, "step": self.step, "loss": float(np.mean(losses)),
                   "val_miou": scores["val_miou"], "minutes": self.elapsed() / 60}
            # The guard is watched, not used to choose: validation picks the best epoch.
            row.update({k: v for k, v in scores.items() if k != "val_miou" and v is not None})
            self.history.append(row)
            log.info("epoch done", extra=row)
            if val is None or val > self.best:
                self.best = val if val is not None else self.best
                self.bad_epochs = 0
                _atomic_save(self.result_model().state_dict(), self.run_dir / "best.pt")
            else:
                self.bad_epochs += 1
            self._save()
            if self.on_epoch:
                self.on_epoch(row)
            if self.bad_epochs >= cfg.patience:
                stopped = "early stop"
                break
            if timed_out:
                stopped = "time budget"
                break
        best_path = self.run_dir / "best.pt"
        state = read_run_file(best_path, self.run_dir) if best_path.exists() else self.result_model().state_dict()
        return TrainResult(state_dict=state, best_val_miou=self.best if self.best >= 0 else None,
                           epochs_done=self.epoch, steps=self.step, seconds=self.elapsed(),
                           history=self.history, stopped=stopped)
