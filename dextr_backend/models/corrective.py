"""``lite0c``: a trained ``lite0`` (frozen) plus a corrector that also sees corrective clicks.

Pass 1 runs the parent, ``base``, on the usual 4 channels and gives the previous mask. Pass 2 runs
``corrector`` on 7 channels: RGB, extreme-point heatmap, positive-click map, negative-click map and
the pass-1 probability x 255, all in the same crop. ``forward`` picks the part by channel count.

Why two networks rather than one with optional inputs: the 4-click masks stay exactly the
parent's whatever the corrector learns, and the corrector is trained on exactly the previous
masks it will see when serving. The corrector starts as a copy of the parent whose 3 new stem
filters are zero, so a freshly grown ``lite0c`` answers every pass exactly as its parent did.
"""

from __future__ import annotations

import torch
from torch import nn

from .lite import DextrLite, dextr_lite

BASE_CHANNELS = 4
CORRECTION_CHANNELS = 7
STEM = "backbone.conv_stem.weight"


class CorrectiveDextr(nn.Module):
    """``(N, 4, S, S)`` -> the frozen parent's logits; ``(N, 7, S, S)`` -> the corrector's."""

    corrections = True

    def __init__(self, variant: str = "lite0", imagenet: bool = False):
        super().__init__()
        self.base = dextr_lite(variant, imagenet)
        self.corrector: DextrLite = dextr_lite(variant, imagenet, in_channels=CORRECTION_CHANNELS)
        self.base.requires_grad_(False)
        self.base.eval()

    def train(self, mode: bool = True) -> CorrectiveDextr:
        """The parent never trains, BatchNorm statistics included."""
        super().train(mode)
        self.base.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if channels == BASE_CHANNELS:
            return self.base(x)
        if channels == CORRECTION_CHANNELS:
            return self.corrector(x)
        raise ValueError(f"lite0c takes {BASE_CHANNELS} or {CORRECTION_CHANNELS} input channels, got {channels}")


def grow_corrective(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``lite0`` state as ``base.*`` and as ``corrector.*`` with zero stem filters for the new
    channels; a state that already has both parts is returned as it is."""
    if any(k.startswith(("base.", "corrector.")) for k in state):
        return dict(state)
    grown = {f"base.{k}": v for k, v in state.items()}
    for key, value in state.items():
        if key == STEM and value.dim() == 4 and value.shape[1] == BASE_CHANNELS:
            pad = value.new_zeros(value.shape[0], CORRECTION_CHANNELS - BASE_CHANNELS, *value.shape[2:])
            value = torch.cat([value, pad], 1)
        grown[f"corrector.{key}"] = value.clone()
    return grown
