"""A moving average of a model's weights, validated and shipped instead of the last step's."""

from __future__ import annotations

import torch


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


__all__ = ["WeightAverage"]
