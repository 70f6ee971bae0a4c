"""f-BRS-B (Sofiiuk et al., CVPR 2020) on a light DEXTR network: corrections without training.

The decoder's fused stride-4 features are rescaled per channel, ``f * (1 + s) + b``, and only the
small head after them is run again while ``s`` and ``b`` (2 x 64 numbers) are fitted by L-BFGS so
that every positive click's pixels come out as object and every negative click's as background.
The backbone runs once per request; each of the at most ``max_evals`` evaluations costs the head
alone at stride 4. The parameters start at zero for every request (the service is stateless), and
the lowest-loss answer is kept. Why here: it needs no training at all, so it works on any ``lite``
version, including a team's retrained one, the moment it is promoted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .job import CorrectionJob, click_windows

if TYPE_CHECKING:
    from ..models.lite import DextrLite

MAX_EVALS = 20  # head evaluations per request: f-BRS's own budget
REG = 1e-3  # weight of sum(s^2) + BIAS_REG * sum(b^2)
KEEP = 10.0  # weight of the mean squared change of the stride-4 probabilities
BIAS_REG = 10.0
CLICK_RADIUS = 1  # a 3x3 square of pixels per click, as in f-BRS


def lite_network(model: nn.Module) -> nn.Module | None:
    """The plain ``lite`` network f-BRS can rescale inside ``model`` (a corrections version's frozen
    parent, or the model itself), or None where there is none (the official ResNet-101)."""
    for candidate in (getattr(model, "base", None), model):
        if candidate is not None and hasattr(candidate, "decoder") and hasattr(candidate.decoder, "fuse"):
            return candidate
    return None


def _click_grid(job: CorrectionJob, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The clicked pixels as ``grid_sample`` coordinates ``(1, 1, K, 2)`` and their targets ``(K,)``."""
    offsets = np.array([(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)], np.float64)
    pts, targets = [], []
    for clicks, target in ((job.positives, 1.0), (job.negatives, 0.0)):
        for x, y in np.asarray(clicks, np.float64).reshape(-1, 2):
            near = np.clip(np.round([x, y]) + offsets, 0, job.size - 1)
            pts.append(near)
            targets.extend([target] * len(near))
    xy = np.concatenate(pts) if pts else np.zeros((0, 2))
    grid = (xy + 0.5) / job.size * 2 - 1  # pixel centres, align_corners=False
    return (torch.tensor(grid, dtype=torch.float32).view(1, 1, -1, 2), torch.tensor(targets, dtype=torch.float32))


class FeatureBRS:
    """``__call__(job, threshold) -> (S, S)`` corrected probabilities for one object."""

    def __init__(
        self,
        network: nn.Module,
        device: torch.device,
        max_evals: int = MAX_EVALS,
        reg: float = REG,
        click_radius: int = CLICK_RADIUS,
        local: bool = True,
        keep: float = KEEP,
        early_stop: bool = False,
    ):
        # Duck-typed (``lite_network``): a ``DextrLite``'s backbone, input statistics and decoder.
        self.network = cast("DextrLite", network)
        self.device = device
        self.max_evals = int(max_evals)
        self.reg = float(reg)
        self.click_radius = int(click_radius)
        self.keep = float(keep)  # pull towards pass 1 everywhere, so a click changes what it must (G-BRS's idea)
        self.local = bool(local)  # keep pass 1 outside the clicks' windows (``job.click_windows``)
        # f-BRS stops once every clicked pixel is on its side; measured here that stop came after a
        # large jump of the whole mask (GrabCut, 10 objects, 8 clicks: 89.3 against 91.1 without it).
        self.early_stop = bool(early_stop)
        self.evals = 0  # head evaluations of the last call (for benchmarks)

    @torch.no_grad()
    def _fused(self, job: CorrectionJob) -> torch.Tensor:
        net = self.network
        x = torch.from_numpy(np.ascontiguousarray(job.inputs)).permute(2, 0, 1)[None].to(self.device)
        feats = net.backbone((x - net.input_shift) / net.input_scale)
        return net.decoder.fuse(feats)

    def _logits(self, fused: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        head = self.network.decoder.head
        return head[1](head[0](fused * (1 + scale.view(1, -1, 1, 1)) + bias.view(1, -1, 1, 1)))

    def __call__(self, job: CorrectionJob, threshold: float) -> np.ndarray:
        grid, target = _click_grid(job, self.click_radius)
        if not len(target):
            return job.previous
        fused = self._fused(job)
        grid, target = grid.to(self.device), target.to(self.device)
        channels = fused.shape[1]
        scale = torch.zeros(channels, device=self.device, requires_grad=True)
        bias = torch.zeros(channels, device=self.device, requires_grad=True)
        positive = target > 0.5
        with torch.no_grad():
            before = torch.sigmoid(self._logits(fused, scale, bias))
        best: dict = {"loss": float("inf"), "logits": None}
        self.evals = 0

        def closure() -> torch.Tensor:
            logits = self._logits(fused, scale, bias)
            at = torch.sigmoid(F.grid_sample(logits, grid, mode="bilinear", align_corners=False).view(-1))
            loss = ((1 - at[positive]) ** 2).mean() if positive.any() else at.new_zeros(())
            if (~positive).any():
                loss = loss + (at[~positive] ** 2).mean()
            loss = loss + self.reg * ((scale**2).sum() + BIAS_REG * (bias**2).sum())
            loss = loss + self.keep * ((torch.sigmoid(logits) - before) ** 2).mean()
            # Gradients for s and b alone: the network's own weights stay untouched.
            scale.grad, bias.grad = torch.autograd.grad(loss, [scale, bias])
            self.evals += 1
            value = float(loss.detach())
            if value < best["loss"]:
                best.update(loss=value, logits=logits.detach())
            # Every clicked pixel on its side: nothing left to fit (f-BRS's early stop).
            if self.early_stop and bool(((at > threshold) == positive).all()):
                raise _Done
            return loss

        optimizer = torch.optim.LBFGS(
            [scale, bias],
            lr=1.0,
            max_iter=self.max_evals,
            max_eval=self.max_evals,
            history_size=20,
            tolerance_grad=1e-8,
            tolerance_change=1e-9,
            line_search_fn="strong_wolfe",
        )
        with torch.enable_grad():
            try:
                optimizer.step(closure)
            except _Done:
                pass
        logits = F.interpolate(best["logits"], size=(job.size, job.size), mode="bilinear", align_corners=False)
        prob = torch.sigmoid(logits)[0, 0].float().cpu().numpy()
        if not self.local:
            return prob
        positive_window, negative_window = click_windows(job, job.previous > threshold)
        return np.where(positive_window | negative_window, prob, job.previous).astype(np.float32)


class _Done(Exception):
    """Raised inside the L-BFGS closure once every click is satisfied."""
