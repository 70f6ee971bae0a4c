"""Objects to train on: every region of an image counts as one object.

A dataset is a list of :class:`ObjectRef` plus a way to load its image and mask, so that
BSDS500 regions, benchmark-layout folders and Label Studio tasks all look the same to the
trainer. The train/validation split is by image and deterministic (a hash of the image key).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ..imageio import read_image


@dataclass(frozen=True)
class ObjectRef:
    image: str        # path or key of the picture
    source: str       # path of the label map holding the object
    label: int        # value of the object in the label map
    area: int


def is_validation(image_key: str, fraction: float = 0.1) -> bool:
    """Deterministic split by image: the same image is always on the same side."""
    digest = hashlib.sha1(Path(image_key).stem.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


@lru_cache(maxsize=512)
def _label_map(path: str) -> np.ndarray:
    m = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if m is None:
        raise InputError(f"{path}: not a readable label map")
    return m if m.ndim == 2 else m.max(axis=2)


@lru_cache(maxsize=512)
def _image(path: str) -> np.ndarray:
    return read_image(path)


def load_object(ref: ObjectRef) -> tuple[np.ndarray, np.ndarray]:
    """``(RGB image, bool mask)`` of one object."""
    return _image(ref.image), _label_map(ref.source) == ref.label


def bsds_regions(root: str | Path, min_area: float = 0.01, max_area: float = 0.8) -> list[ObjectRef]:
    """BSDS500 human segmentations (``segmentations/<id>_<k>.png``, uint16 region labels).

    Most regions are tiny, so keep those covering ``min_area`` to ``max_area`` of the image.
    """
    root = Path(root)
    seg_dir, img_dir = root / "segmentations", root / "images"
    if not seg_dir.is_dir() or not img_dir.is_dir():
        raise InputError(f"{root}: not a BSDS500 folder (needs images/ and segmentations/)")
    refs = []
    for seg in sorted(seg_dir.glob("*.png")):
        image = img_dir / (seg.stem.rsplit("_", 1)[0] + ".jpg")
        if not image.exists():
            continue
        labels = cv2.imread(str(seg), cv2.IMREAD_UNCHANGED)
        values, counts = np.unique(labels, return_counts=True)
        total = labels.size
        for v, c in zip(values, counts):
            if v != 0 and min_area * total <= c <= max_area * total:
                refs.append(ObjectRef(str(image), str(seg), int(v), int(c)))
    if not refs:
        raise InputError(f"{root}: no regions found")
    return refs


def split(refs: list[ObjectRef], fraction: float = 0.1) -> tuple[list[ObjectRef], list[ObjectRef]]:
    train = [r for r in refs if not is_validation(r.image, fraction)]
    val = [r for r in refs if is_validation(r.image, fraction)]
    return train, val
