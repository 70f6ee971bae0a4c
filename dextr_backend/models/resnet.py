"""The official DEXTR network: DeepLab-v2 ResNet-101 (output stride 8) with a PSP head.

Layer names match the released checkpoints (``dextr_pascal-sbd.pth`` and friends) key for
key, so they load with ``strict=True``. Differences from torchvision's ResNet are deliberate
and come from the Caffe original: the stride sits on a bottleneck's first 1x1 conv, and every
block of layer3 / layer4 is dilated (2 / 4), the first one included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class PSPHead(nn.Module):
    """Pyramid pooling over bins (1, 2, 3, 6), concatenated with the features, then a classifier."""

    def __init__(self, in_features: int = 2048, out_features: int = 512, sizes=(1, 2, 3, 6), n_classes: int = 1):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d((s, s)),
                nn.Conv2d(in_features, out_features, 1, bias=False),
                nn.BatchNorm2d(out_features),
                nn.ReLU(inplace=True),
            )
            for s in sizes
        )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_features + len(sizes) * out_features, out_features, 1, bias=False),
            nn.BatchNorm2d(out_features),
            nn.ReLU(inplace=True),
        )
        self.final = nn.Conv2d(out_features, n_classes, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        h, w = feats.shape[-2:]
        priors = [
            F.interpolate(stage(feats), size=(h, w), mode="bilinear", align_corners=True) for stage in self.stages
        ]
        return self.final(self.bottleneck(torch.cat(priors + [feats], 1)))


class DeepLabResNet(nn.Module):
    """Input: ``(N, 4, H, W)`` RGB 0-255 + heatmap 0-255 (no mean subtraction, as trained).

    Output: logits ``(N, 1, H, W)``, upsampled from stride 8 with ``align_corners=True``.
    """

    def __init__(self, layers=(3, 4, 23, 3), in_channels: int = 4, n_classes: int = 1):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=False)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], dilation=2)
        self.layer4 = self._make_layer(512, layers[3], dilation=4)
        self.layer5 = PSPHead(2048, 512, (1, 2, 3, 6), n_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4 or dilation > 1:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        layers = [Bottleneck(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.layer5(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def resnet101(**_: object) -> DeepLabResNet:
    """The paper's network, ready for the released checkpoints (48.8 M parameters)."""
    return DeepLabResNet((3, 4, 23, 3))
