"""Which objects train and which judge: deterministic splits by image, so the same picture is
always on the same side whatever order the objects come in."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ..errors import InputError
from .objects import ObjectRef

log = logging.getLogger(__name__)


def is_validation(image_key: str, fraction: float = 0.1) -> bool:
    """Deterministic split by image: the same image is always on the same side."""
    digest = hashlib.sha1(Path(image_key).stem.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def spread(refs: list[ObjectRef], n: int) -> list[ObjectRef]:
    """``n`` objects evenly spaced through ``refs``: a capped validation set still covers every
    image instead of the first few (the list is ordered by image)."""
    if n >= len(refs):
        return list(refs)
    return [refs[int(i * len(refs) / n)] for i in range(n)]


def split(refs: list[ObjectRef], fraction: float = 0.1) -> tuple[list[ObjectRef], list[ObjectRef]]:
    train = [r for r in refs if not is_validation(r.image, fraction)]
    val = [r for r in refs if is_validation(r.image, fraction)]
    return train, val


def split_for_training(refs: list[ObjectRef], fraction: float) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Deterministic split by image; with very few images, still keep one image aside if possible."""
    train, val = split(refs, fraction)
    images = sorted({r.image for r in refs})
    if not val and len(images) >= 2:
        held = images[-1]
        train = [r for r in refs if r.image != held]
        val = [r for r in refs if r.image == held]
    if not train:
        raise InputError("need objects on at least one image to train on")
    if not val:
        log.warning("only one image: validating on the training image itself")
        val = list(train)
    return train, val


def hold_out_split(refs: list[ObjectRef], fraction: float, min_objects: int) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """The retraining job's split: hold out ``round(fraction * images)`` whole images, but at least
    enough for ``min_objects`` objects, and always leave one image to train on.

    Which images: the first in the order of the hash ``is_validation`` uses, so the choice depends on
    the images only (not on their order), and a count rather than a per-image threshold keeps the
    share steady on small projects, where a per-image draw swings widely. Why a floor: a promotion
    judged on fewer than ``min_objects`` objects is refused (``decide``), so a tiny project would
    never get a new version."""
    images = sorted({r.image for r in refs}, key=lambda image: (image_rank(image), image))
    if len(images) < 2:
        return split_for_training(refs, fraction)  # one image: it has to serve both sides
    per_image = {image: sum(r.image == image for r in refs) for image in images}
    k = min(max(1, round(fraction * len(images))), len(images) - 1)
    while k < len(images) - 1 and sum(per_image[i] for i in images[:k]) < min_objects:
        k += 1
    held = set(images[:k])
    return [r for r in refs if r.image not in held], [r for r in refs if r.image in held]


def image_rank(image: str) -> float:
    """Where an image falls in ``is_validation``'s hash order (0 to 1; below the fraction: held out)."""
    return int.from_bytes(hashlib.sha1(Path(image).stem.encode()).digest()[:4], "big") / 2**32


__all__ = ["hold_out_split", "image_rank", "is_validation", "split", "split_for_training", "spread"]
