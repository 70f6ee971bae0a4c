"""Class-balanced binary cross-entropy (HED / DEXTR), normalised per pixel.

The paper sums over pixels, which forces learning rates of 1e-8; dividing by the pixel count
keeps the same balance with ordinary learning rates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def balanced_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Positives weighted by the negative fraction and vice versa, per image, averaged."""
    logits = logits.float().flatten(1)
    target = target.float().flatten(1)
    pos = target.mean(1, keepdim=True)
    weight = target * (1.0 - pos) + (1.0 - target) * pos
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")
    # Sum of weights per image is 2 * pos * (1 - pos) * n; normalising by n keeps it per pixel.
    return loss.mean(1).mean()


def correction_bce(
    logits: torch.Tensor, target: torch.Tensor, previous: torch.Tensor, error_weight: float = 1.0
) -> torch.Tensor:
    """``balanced_bce`` with the pixels the previous mask (pass 1, bool) got wrong weighted
    ``error_weight`` times the others, renormalised per image so the loss keeps its scale.

    Why: for a corrections network most of the crop is already right after pass 1, so the plain
    loss is dominated by pixels it only has to keep, and the gradient for "use the click" is a
    small share of it. ``error_weight`` 1 is ``balanced_bce`` exactly.
    """
    logits = logits.float().flatten(1)
    target = target.float().flatten(1)
    wrong = (previous.flatten(1) != (target > 0.5)).float()
    pos = target.mean(1, keepdim=True)
    weight = target * (1.0 - pos) + (1.0 - target) * pos
    if error_weight != 1.0:
        emphasis = 1.0 + (error_weight - 1.0) * wrong
        weight = weight * emphasis / emphasis.mean(1, keepdim=True)
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")
    return loss.mean(1).mean()
