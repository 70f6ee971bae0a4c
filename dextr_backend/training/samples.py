"""Training samples as in the paper: augment the image, take jittered extreme points from the
object's mask, crop around them with a margin, and build the same 4-channel input the
predictor builds at inference time (``geometry.prepare_input``)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .. import geometry


@dataclass(frozen=True)
class Augment:
    """Random scale, rotation, flip, crop margin and click jitter (paper: 0.75-1.25, +-20 deg, 5 px),
    and optionally colour: brightness, contrast and saturation each scaled by up to ``+-color``."""

    scale: tuple[float, float] = (0.75, 1.25)
    rotate: float = 20.0
    flip: bool = True
    margin: tuple[int, int] = (40, 60)  # px around the points; inference uses geometry.PAD = 50
    jitter: int = 5
    color: float = 0.0  # 0 = off (the paper has none)

    @classmethod
    def none(cls) -> Augment:
        return cls(scale=(1.0, 1.0), rotate=0.0, flip=False, margin=(geometry.PAD, geometry.PAD), jitter=0)


def _warp(image: np.ndarray, mask: np.ndarray, aug: Augment, rng: np.random.Generator):
    """Scale and rotate about the object's centre, flip; the canvas grows with the scale."""
    s = rng.uniform(*aug.scale)
    angle = rng.uniform(-aug.rotate, aug.rotate)
    if abs(s - 1.0) > 1e-3 or abs(angle) > 1e-3:
        ys, xs = np.nonzero(mask)
        centre = (float(xs.mean()), float(ys.mean()))
        m: np.ndarray = cv2.getRotationMatrix2D(centre, angle, s)
        h, w = mask.shape
        size = (int(round(w * s)), int(round(h * s)))
        m[:, 2] += (np.array(size) - np.array([w, h])) / 2.0
        image = cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderValue=0)
        mask = cv2.warpAffine(mask.astype(np.uint8), m, size, flags=cv2.INTER_NEAREST, borderValue=0) > 0
    if aug.flip and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def _recolour(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """The same picture under another camera or light, so a few hundred photos are not memorised."""
    img = image.astype(np.float32)
    if img.ndim == 3 and img.shape[2] == 3:
        grey = img.mean(axis=2, keepdims=True)
        img = grey + (img - grey) * rng.uniform(1 - strength, 1 + strength)
    mean = img.mean()
    img = mean + (img - mean) * rng.uniform(1 - strength, 1 + strength)
    img *= rng.uniform(1 - strength, 1 + strength)
    return np.clip(img, 0, 255).astype(image.dtype)


def make_sample(
    image: np.ndarray, mask: np.ndarray, resolution: int, aug: Augment, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(input SxSx4 float32, target SxS float32)``, or None if augmentation lost the object."""
    image, mask = _warp(image, mask, aug, rng)
    if aug.color > 0:
        image = _recolour(image, aug.color, rng)
    if mask.sum() < 16:
        return None
    points = geometry.extreme_points(mask, aug.jitter, rng)
    pad = int(rng.integers(aug.margin[0], aug.margin[1] + 1))
    x, crop = geometry.prepare_input(image, points, resolution, pad)
    target = geometry.crop_padded(mask.astype(np.float32), crop.box)
    target = cv2.resize(target, (resolution, resolution), interpolation=cv2.INTER_LINEAR)
    return x, (target >= 0.5).astype(np.float32)
