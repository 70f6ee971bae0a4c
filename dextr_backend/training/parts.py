"""Which parts of a network train, and at which rate."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import InputError


def freeze_batchnorm(model: torch.nn.Module) -> None:
    """BatchNorm layers in eval mode with frozen affine parameters: on a few hundred objects,
    batches of 8 give statistics too noisy to keep updating."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


def freeze_parts(model: torch.nn.Module, names: Sequence[str]) -> list[torch.nn.Module]:
    """Stop training the named top-level parts (e.g. ``backbone``, ``decoder``) altogether.

    Why: to train a new part (``lite0r``'s refiner) on data whose style the trained trunk should
    not drift towards. The caller keeps the returned modules in eval mode so their BatchNorm
    statistics stay as they are.
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


def param_groups(model: torch.nn.Module, lr: float, backbone_lr_scale: float) -> list[dict]:
    """The trainable parameters in two groups: a pretrained trunk learns more slowly than the rest."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    backbone = [p for n, p in trainable if is_backbone(n)]
    ids = {id(p) for p in backbone}
    head = [p for _, p in trainable if id(p) not in ids]
    return [{"params": backbone, "lr": lr * backbone_lr_scale}, {"params": head, "lr": lr}]


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up, then a cosine decay to 2 % of the base rate."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.5 * (1 + math.cos(math.pi * min(1.0, step / max(total_steps, 1)))), 0.02)


__all__ = ["freeze_batchnorm", "freeze_parts", "is_backbone", "lr_factor", "param_groups"]
