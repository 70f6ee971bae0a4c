"""Numpy in, numpy out: an RGB image and extreme points become a mask.

The predictor owns the device, precision and batching, and runs pass 1 on the engine it is given
(``engines``: a CPU runtime that ``build`` made, or torch); the network (``models``) is pure
tensors and the pipeline maths (``geometry``) is pure numpy, so each can be tested alone. It reads
no environment and knows no weights store: ``build.build_predictor`` makes one from a version.

It runs over 300 lines: the two passes (extreme points, then corrections), their batching and
the paste-back belong to one object that owns the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from torch import nn

from . import geometry
from .correctors import CorrectionJob, choose_corrector, make_consistent
from .correctors.fbrs import FeatureBRS, lite_network
from .correctors.graphcut import local_grabcut
from .engines import TORCH, Engine
from .engines.export import CHANNELS
from .errors import InputError
from .imageio import as_rgb
from .models import HeadedDextr
from .postprocess import PostProcess

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    mask: np.ndarray  # bool (H, W)
    probabilities: np.ndarray  # float32 (H, W), zero outside the points' box
    score: float  # mean probability inside the mask: the model's own confidence
    points: np.ndarray = field(repr=False)  # (N, 2) the clicks used
    # Pass 1 as the network saw it, so corrections can be added without running it again (``correct``).
    crop: geometry.Crop | None = field(default=None, repr=False)
    first_probabilities: np.ndarray | None = field(default=None, repr=False)  # float32 (S, S), pass 1
    corrections: int = 0  # corrective clicks the network used (0 for a version without corrections)


def _as_item(item) -> tuple:
    """``(image, points)`` or ``(image, points, positives, negatives)`` -> the 4-tuple."""
    if len(item) == 2:
        return item[0], item[1], (), ()
    if len(item) == 4:
        return tuple(item)
    raise InputError(
        f"a batch item is (image, points) or (image, points, positives, negatives), not {len(item)} values"
    )


def _clicks(points, image_shape) -> np.ndarray:
    """Corrective clicks as an ``(N, 2)`` array (N may be 0), inside the image."""
    if points is None or len(points) == 0:
        return np.zeros((0, 2), np.float64)
    return geometry.as_points(points, image_shape, min_points=1)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """``torch.sigmoid`` in numpy, float32, without overflow warnings for large negative logits."""
    logits = np.asarray(logits, np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA where available), ``cpu``, ``cuda`` or ``cuda:N``; anything else, or a GPU that
    is not there, is a one-line :class:`InputError` rather than torch's traceback."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {str(device)[:40]!r}: use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} asked for, but no CUDA GPU is usable here (use cpu or auto)")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise InputError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif chosen.type != "cpu":
        raise InputError(f"device {str(device)!r} is not supported: use auto, cpu, cuda or cuda:N")
    return chosen


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bfloat16 natively (avx512_bf16 or amx_bf16); None where unknown.

    Without it, bf16 autocast is emulated and several times slower than fp32. Callers warn rather
    than refuse, since the answer can be unknown (not Linux) and the user may know better.
    """
    try:
        with open(cpuinfo) as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return None
    if not flags:
        return None
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def warn_if_bf16_emulated(what: str) -> None:
    if cpu_has_native_bf16() is False:
        log.warning(
            "%s: this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag), so bf16 is "
            "emulated and several times slower than fp32; leave it off here",
            what,
        )


class DextrPredictor:
    """Runs a DEXTR network on clicks.

    >>> predictor = build_predictor()            # dextr_backend.build: the current weights version
    >>> pred = predictor.predict(image, [[x0, y0], [x1, y1], [x2, y2], [x3, y3]])
    >>> pred.mask.shape == image.shape[:2]
    >>> fixed = predictor.predict(image, points, positives=[[x, y]], negatives=[])

    A request is stateless: the extreme points give the previous mask (pass 1), then all
    corrective clicks at once correct it in the same crop, by the ``corrector``'s steps
    (``correctors``: the network's own pass 2, a local graph cut, f-BRS with at most 20 evaluations
    of the small head). Without a corrector, clicks are ignored and the log says so.
    """

    def __init__(
        self,
        model: nn.Module,
        input_size: int,
        *,
        threshold: float = 0.8,
        pad: int = geometry.PAD,
        sigma: float | None = None,
        device: str | torch.device = "auto",
        postprocess: PostProcess | None = None,
        version: str = "custom",
        batch_size: int | None = None,
        cpu_bf16: bool = False,
        flip: bool = False,
        corrections: bool | None = None,
        corrector: str | None = None,
        engine: Engine | None = None,
    ):
        self.device = pick_device(device)
        # A CPU runtime for pass 1 (``engines``; made by ``build``); None runs everything in torch.
        self.engine = engine if self.device.type == "cpu" else None
        # Whether the network takes the 7-channel input with corrective clicks (models docstring).
        network = bool(getattr(model, "corrections", False)) if corrections is None else corrections
        self.steps = choose_corrector(corrector, network, model)  # correctors' steps, in order
        self.corrections = bool(self.steps)
        self._told_ignored = False
        # Test-time flip: the mirrored crop's logits, mirrored back, are averaged in; twice the
        # network time for a small gain (the model cards give it per version).
        self.flip = bool(flip)
        # bf16 on a CPU with native support is faster, but off unless asked: its masks must be
        # checked against fp32 for each model (benchmarks/latency.py --bf16).
        self.cpu_bf16 = bool(cpu_bf16)
        if self.cpu_bf16 and self.device.type == "cpu":
            warn_if_bf16_emulated("DEXTR_CPU_BF16=1")
        self.input_size = int(input_size)
        if not 0.0 <= float(threshold) < 1.0:
            raise InputError(f"threshold {threshold:g} must lie in [0, 1): it cuts probabilities")
        self.threshold = float(threshold)
        self.pad = int(pad)
        self.sigma = sigma
        self.postprocess = postprocess if postprocess is not None else PostProcess()
        self.version = version
        # Objects per forward pass. On a CPU a batch is no faster than one at a time, and eight
        # objects' activations (about 350 MB) would lift a 100-object request over 1 GB.
        self.batch_size = int(batch_size) if batch_size else (8 if self.device.type == "cuda" else 1)
        self.model = model.eval().to(self.device)
        if isinstance(self.model, HeadedDextr):  # lite0h: pass 2 reuses pass 1's backbone
            self.model.reuse_base = True
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        # ``choose_corrector`` refused fbrs for a model without a lite network.
        self._fbrs = (
            FeatureBRS(cast(nn.Module, lite_network(self.model)), self.device) if "fbrs" in self.steps else None
        )

    @property
    def engine_name(self) -> str:
        """What runs pass 1, as ``DEXTR_ENGINE`` names it: ``torch``, ``onnxruntime`` or ``openvino``."""
        return self.engine.name if self.engine is not None else TORCH

    @property
    def corrector_name(self) -> str:
        """How corrective clicks are used, as ``DEXTR_CORRECTOR`` names it (``none`` where they are not)."""
        return "+".join(self.steps) or "none"

    def _autocast(self):
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        if self.cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """``(B, S, S, C)`` float32 network inputs (C = 4, or 7 with corrections) -> ``(B, S, S)``
        probabilities, in chunks. The engine, where there is one, runs the 4-channel pass; torch the rest."""
        if self.engine is not None and inputs.shape[-1] == CHANNELS:
            return self._engine_forward(self.engine, inputs)
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(inputs), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(inputs[start : start + self.batch_size]))
                x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
                if self.device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = self.model(x).float()
                if self.flip:
                    logits = 0.5 * (logits + self.model(x.flip(-1)).float().flip(-1))
                out.append(torch.sigmoid(logits)[:, 0].cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.input_size, self.input_size), np.float32)

    def _engine_forward(self, engine: Engine, inputs: np.ndarray) -> np.ndarray:
        """``forward`` on a CPU runtime: the same chunks, and test-time flip as a second run on the
        mirrored crop (the runtime sees one graph; bf16 autocast is torch's alone)."""
        out = []
        for start in range(0, len(inputs), self.batch_size):
            x = np.ascontiguousarray(inputs[start : start + self.batch_size].transpose(0, 3, 1, 2), np.float32)
            logits = engine(x)
            if self.flip:
                logits = 0.5 * (logits + engine(np.ascontiguousarray(x[..., ::-1]))[..., ::-1])
            out.append(_sigmoid(logits[:, 0]))
        return np.concatenate(out) if out else np.zeros((0, self.input_size, self.input_size), np.float32)

    def predict(self, image: np.ndarray, points, positives=(), negatives=()) -> Prediction:
        """One object: ``image`` RGB uint8 (H, W, 3), ``points`` (N >= 4, 2) pixel ``(x, y)``;
        ``positives`` and ``negatives`` are corrective clicks (pixels), used by versions that take them."""
        return self.predict_batch([(image, points, positives, negatives)])[0]

    def predict_objects(self, image: np.ndarray, objects: Sequence) -> list[Prediction]:
        """Many objects of one image, one forward pass for all of them."""
        return self.predict_batch([(image, pts) for pts in objects])

    def _ignored(self, count: int) -> None:
        """Corrections sent to a version that cannot use them: said once at info, then at debug."""
        level = logging.DEBUG if self._told_ignored else logging.INFO
        self._told_ignored = True
        log.log(level, "weights %s take no corrective clicks: %d ignored", self.version, count)

    def predict_batch(self, items: Sequence[tuple]) -> list[Prediction]:
        """Any mix of images and objects: ``[(image, points), ...]`` or ``[(image, points, positives,
        negatives), ...]``. At most two batched passes: the extreme points for every item, then, for
        the items with corrective clicks, all of their clicks at once (versions that take them)."""
        points, inputs, crops, corrections = [], [], [], []
        for item in items:
            image, pts, pos, neg = _as_item(item)
            image = as_rgb(image)
            pts = geometry.as_points(pts, image.shape)
            x, crop = geometry.prepare_input(image, pts, self.input_size, self.pad, self.sigma)
            points.append(pts)
            inputs.append(x)
            crops.append(crop)
            corrections.append((_clicks(pos, image.shape), _clicks(neg, image.shape)))
        if not inputs:
            return []
        first = self.forward(np.stack(inputs))
        wanted = [i for i, (pos, neg) in enumerate(corrections) if len(pos) + len(neg)]
        fixed = dict(
            zip(
                wanted,
                self._second_pass(
                    [(inputs[i], crops[i], first[i], *corrections[i]) for i in wanted], [points[i] for i in wanted]
                ),
            )
        )
        return [fixed.get(i) or self._finish(first[i], first[i], crops[i], points[i]) for i in range(len(inputs))]

    def correct(self, image: np.ndarray, first: Prediction, positives=(), negatives=()) -> Prediction:
        """Pass 2 alone, from a stored pass-1 result: what ``predict(image, first.points, positives,
        negatives)`` returns, without running pass 1 again (``evaluate`` adds clicks one by one)."""
        return self.correct_batch([(image, first, positives, negatives)])[0]

    def correct_batch(self, items: Sequence[tuple]) -> list[Prediction]:
        """``[(image, first, positives, negatives), ...]`` -> predictions, one batched pass 2."""
        jobs: list[tuple] = []
        points: list[np.ndarray] = []
        results: list[Prediction] = []
        for image, first, pos, neg in items:
            if first.crop is None or first.first_probabilities is None:
                raise InputError("correct() needs a Prediction made by this predictor (it holds pass 1)")
            if not self.corrections:  # pass 1 stands: no crop to rebuild
                jobs.append((None, None, None, _clicks(pos, first.mask.shape), _clicks(neg, first.mask.shape)))
                points.append(first.points)
                results.append(first)
                continue
            image = as_rgb(image)
            x, crop = geometry.prepare_input(image, first.points, self.input_size, self.pad, self.sigma)
            jobs.append((x, crop, first.first_probabilities, _clicks(pos, image.shape), _clicks(neg, image.shape)))
            points.append(first.points)
            results.append(first)
        fixed = self._second_pass(jobs, points)
        return [f if f is not None else r for f, r in zip(fixed, results)]

    def _second_pass(self, jobs: list[tuple], points: list[np.ndarray]) -> list[Prediction | None]:
        """Jobs ``(4-channel input, crop, pass-1 probabilities, positives, negatives)`` -> corrected
        predictions; None where pass 1 stands (no usable click, or a version without corrections)."""
        count = sum(len(pos) + len(neg) for *_, pos, neg in jobs)
        if not self.corrections:
            if count:
                self._ignored(count)
            return [None] * len(jobs)
        network = self.steps[0] == "network"  # only the network reads the 7-channel input
        inputs, kept = [], []
        out: list[Prediction | None] = [None] * len(jobs)
        for j, (x, crop, prev, pos, neg) in enumerate(jobs):
            pos_in, neg_in = (
                c[geometry.inside_box(c, crop.box)]
                for c in (np.asarray(pos, np.float64).reshape(-1, 2), np.asarray(neg, np.float64).reshape(-1, 2))
            )
            dropped = len(pos) + len(neg) - len(pos_in) - len(neg_in)
            if dropped:
                log.info("%d corrective click(s) outside the crop of the extreme points dropped", dropped)
            if len(pos_in) + len(neg_in):
                s = crop.resolution
                job = CorrectionJob(
                    x, prev, geometry.to_crop(pos_in, crop.box, s), geometry.to_crop(neg_in, crop.box, s)
                )
                if network:
                    extra, _, _ = geometry.correction_channels(crop, pos_in, neg_in, prev, self.sigma)
                    inputs.append(np.concatenate([x, extra], axis=2))
                kept.append((j, crop, job, pos_in, len(pos_in) + len(neg_in)))
        if not kept:
            return out
        second = self.forward(np.stack(inputs)) if network else [None] * len(kept)
        for prob, (j, crop, job, pos_in, used) in zip(second, kept):
            prob = self._corrected(prob, job)
            out[j] = self._finish(prob, job.previous, crop, points[j], pos_in, used)
        return out

    def _corrected(self, network_prob: np.ndarray | None, job: CorrectionJob) -> np.ndarray:
        """One object's corrected crop probabilities: each step of the chosen method (``correctors``)
        starts from the last one's answer."""
        prob = job.previous
        for step in self.steps:
            if step == "network":  # always the first step, and then ``_second_pass`` ran the network
                prob = cast(np.ndarray, network_prob)
            elif step == "consistent":
                prob = make_consistent(prob, job, self.threshold)
            else:
                # ``__init__`` made ``_fbrs`` wherever "fbrs" is a step.
                fix: Callable[[CorrectionJob, float], np.ndarray] = (
                    cast(FeatureBRS, self._fbrs) if step == "fbrs" else local_grabcut
                )
                prob = fix(dataclasses.replace(job, previous=prob), self.threshold)
        return prob

    def _finish(
        self,
        prob: np.ndarray,
        first: np.ndarray,
        crop: geometry.Crop,
        pts: np.ndarray,
        positives: np.ndarray | None = None,
        used: int = 0,
    ) -> Prediction:
        """Paste back, threshold and clean up; a positive click keeps the blob it lies in."""
        full = geometry.paste_back(prob, crop)
        clicks = pts if positives is None or not len(positives) else np.concatenate([pts, positives])
        mask = self.postprocess(full > self.threshold, clicks)
        score = float(full[mask].mean()) if mask.any() else 0.0
        return Prediction(
            mask=mask,
            probabilities=full,
            score=score,
            points=pts,
            crop=crop,
            first_probabilities=first,
            corrections=used,
        )
