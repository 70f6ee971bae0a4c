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
