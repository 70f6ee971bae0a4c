"""Objects to train on: every region of an image counts as one object.

A dataset is a list of :class:`ObjectRef` plus a way to load its image and mask, so that
BSDS500 regions, benchmark-layout folders and Label Studio exports all look the same to the
trainer. Decoded files are cached by path *and* file identity (inode, mtime, size), so a folder
exported again under the same paths is read afresh, never served stale.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..imageio import read_image
from .benchmarks import EvalObject, decode_objects, load_dataset, read_mask_file


@dataclass(frozen=True)
class ObjectRef:
    image: str  # path of the picture
    source: str  # path of the mask file holding the object
    label: int  # value of the object in a label map, or its index among the file's objects
    area: int
    fmt: str = "labels"  # "labels" (value == label) or an evaluation mask format (see decode_objects)


def _identity(path: str) -> tuple:
    """What the caches are keyed on: a rewritten file is a new key."""
    try:
        st = os.stat(path)
    except OSError:
        return (path, None, None, None)  # the reader raises its own clear error
    return (path, st.st_ino, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=512)
def _label_map(key: tuple) -> np.ndarray:
    return read_mask_file(Path(key[0]))


@lru_cache(maxsize=512)
def _image(key: tuple) -> np.ndarray:
    return read_image(key[0])


@lru_cache(maxsize=512)
def _decoded(key: tuple, fmt: str) -> list[np.ndarray]:
    return [obj for _, obj, _ in decode_objects(read_mask_file(Path(key[0])), fmt)]


def load_object(ref: ObjectRef) -> tuple[np.ndarray, np.ndarray]:
    """``(RGB image, bool mask)`` of one object."""
    image = _image(_identity(ref.image))
    if ref.fmt == "labels":
        return image, _label_map(_identity(ref.source)) == ref.label
    return image, _decoded(_identity(ref.source), ref.fmt)[ref.label]


def folder_objects(root: str | Path, mask_format: str = "auto", min_area: int = 64) -> list[ObjectRef]:
    """Objects of a benchmark-layout folder (the layouts ``evaluate`` reads), including the plain
    ``images/`` + ``masks/`` layout whose masks hold instance ids."""
    ds = load_dataset(root, mask_format)
    refs = []
    for pair in ds.pairs:
        fmt = ds.rule
        for i, obj in enumerate(_decoded(_identity(str(pair.mask_path)), fmt)):
            if obj.sum() >= min_area:
                refs.append(ObjectRef(str(pair.image_path), str(pair.mask_path), i, int(obj.sum()), fmt))
    if not refs:
        raise InputError(f"{root}: no objects of at least {min_area} pixels")
    return refs


def spans_image(mask: np.ndarray) -> bool:
    """True for a region touching two opposite borders: sky, ground, water, walls - background
    "stuff" rather than an object anyone would outline with four clicks."""
    return bool((mask[:, 0].any() and mask[:, -1].any()) or (mask[0].any() and mask[-1].any()))


def bsds_regions(
    root: str | Path, min_area: float = 0.01, max_area: float = 0.8, drop_background: bool = False
) -> list[ObjectRef]:
    """BSDS500 human segmentations (``segmentations/<id>_<k>.png``, uint16 region labels).

    Most regions are tiny, so keep those covering ``min_area`` to ``max_area`` of the image;
    ``drop_background`` also leaves out regions spanning the image side to side (16 % of them).
    """
    if not 0.0 <= min_area < max_area:
        raise InputError(
            f"minimum region area {min_area:g} must be a share of the picture from 0 to below {max_area:g}"
        )
    root = Path(root)
    seg_dir, img_dir = root / "segmentations", root / "images"
    if not seg_dir.is_dir() or not img_dir.is_dir():
        raise InputError(f"{root}: not a BSDS500 folder (needs images/ and segmentations/)")
    refs = []
    for seg in sorted(seg_dir.glob("*.png")):
        image = img_dir / (seg.stem.rsplit("_", 1)[0] + ".jpg")
        if not image.exists():
            continue
        labels = read_mask_file(seg)
        values, counts = np.unique(labels, return_counts=True)
        total = labels.size
        for v, c in zip(values, counts):
            if v != 0 and min_area * total <= c <= max_area * total:
                if drop_background and spans_image(labels == v):
                    continue
                refs.append(ObjectRef(str(image), str(seg), int(v), int(c)))
    if not refs:
        raise InputError(f"{root}: no regions found")
    return refs


def file_digest(path: str | Path) -> bytes:
    """sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").digest()


def objects_key(refs: list[ObjectRef]) -> str:
    """sha1 over which objects a run trains on, by content: the bytes of every image and mask file
    (each hashed once) plus which object of the mask each one is. A resumed run must never train on
    labels corrected since its checkpoint, and two runs that filter the same folder differently
    (``--min-area``, ``--drop-background``) must never resume each other's checkpoint."""
    digests: dict[str, str] = {}

    def digest_of(path: str) -> str:
        if path not in digests:
            digests[path] = file_digest(path).hex()
        return digests[path]

    digest = hashlib.sha1()
    for ref in refs:
        digest.update(f"{digest_of(ref.image)}|{digest_of(ref.source)}|{ref.label}|{ref.fmt}\n".encode())
    return digest.hexdigest()


def folder_hash(folder: str | Path) -> str:
    """sha256 over every file's relative path and content: names the exact data a model saw."""
    h = hashlib.sha256()
    root = Path(folder)
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        h.update(str(p.relative_to(root)).encode())
        h.update(file_digest(p))
    return h.hexdigest()


def as_eval_objects(refs: list[ObjectRef]):
    """The objects in the form ``evaluation.evaluate_objects`` scores, so training and
    ``evaluate`` measure alike."""
    for ref in refs:
        image, mask = load_object(ref)
        yield EvalObject(
            Path(ref.image), f"{Path(ref.source).stem}:{ref.label}", mask, np.zeros(mask.shape, bool), image=image
        )


__all__ = [
    "ObjectRef",
    "as_eval_objects",
    "bsds_regions",
    "file_digest",
    "folder_hash",
    "folder_objects",
    "load_object",
    "objects_key",
    "spans_image",
]
