"""Known published weights, in the style of torchvision's weights enums: each entry says where the
file lives, how to check it, and how well it measured, so ``weights list`` can show what a
download would buy before it is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Probability threshold a model's masks are cut at, by architecture. The official DEXTR models were
# evaluated at 0.8; our own networks are trained with a balanced loss and cut at 0.5.
DEFAULT_THRESHOLDS = {"resnet101": 0.8}
FALLBACK_THRESHOLD = 0.5


def default_threshold(arch: str) -> float:
    """The one place the per-architecture default threshold is decided."""
    return DEFAULT_THRESHOLDS.get(arch, FALLBACK_THRESHOLD)


@dataclass(frozen=True)
class KnownWeights:
    name: str
    arch: str
    input_size: int
    threshold: float
    url: str
    sha256: str | None          # None: not pinned, trusted on first download and recorded then
    metrics: dict = field(hash=False)
    license: str
    description: str
    filename: str
    mirrors: tuple[str, ...] = ()   # tried in order when ``url`` cannot be fetched


_PRIMARY = "https://data.vision.ee.ethz.ch/csergi/share/DEXTR/"
_MIRROR = "https://data.vision.ee.ethz.ch/kmaninis/share/DEXTR/Downloads/models/"
_PAPER = "Maninis et al., Deep Extreme Cut, CVPR 2018"


def _official(name: str, metrics: dict, trained_on: str) -> KnownWeights:
    filename = f"{name}.pth"
    return KnownWeights(
        name=name, arch="resnet101", input_size=512, threshold=default_threshold("resnet101"),
        url=_PRIMARY + filename, sha256=None, metrics=metrics, license="MIT",
        description=f"official DEXTR ResNet-101, trained on {trained_on} ({_PAPER})",
        filename=filename, mirrors=(_MIRROR + filename,),
    )


KNOWN_WEIGHTS: dict[str, KnownWeights] = {w.name: w for w in (
    _official("dextr_pascal-sbd", {"pascal_voc12_val_iou": 91.5, "grabcut_iou": 94.4},
              "PASCAL VOC 2012 train + SBD (10582 images)"),
    _official("dextr_pascal", {"pascal_voc12_val_iou": 90.5},
              "PASCAL VOC 2012 train (1464 images)"),
    _official("dextr_coco", {"pascal_voc12_val_iou": 87.8},
              "COCO train 2014 (82783 images)"),
)}

__all__ = ["DEFAULT_THRESHOLDS", "KNOWN_WEIGHTS", "KnownWeights", "default_threshold"]
