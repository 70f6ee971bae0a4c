"""Reading interactive-segmentation benchmarks laid out as a picture folder beside a mask folder.

The public benchmarks (GrabCut, Berkeley, DAVIS, COCO-MVal in the RITM layout) all share one
shape: ``<root>/<images>/<id>.<ext>`` and ``<root>/<masks>/<id>.png``, matched by file stem.
COCO-MVal puts several objects of an image in separate files named ``<class><k>_<imageid>.png``.
What differs is how a mask encodes the object, so each mask folder name implies a convention:

========== ============ ==========================================================
folder     format       object / ignore
========== ============ ==========================================================
boundary_GT ``grabcut`` 255 object, 128 unknown band (left out of IoU), 0 background
masks      ``half``     value > 127 (max over RGB); a gray or 16-bit mask whose values
                        are all small (1..K) holds instance ids, one object per id
gt         ``nonzero``  any non-zero value (max over RGB)
========== ============ ==========================================================

Masks are decoded lazily while iterating, so a large benchmark never sits in memory at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

IMAGE_DIRS = ("images", "img", "data_GT")
MASK_DIRS = ("masks", "gt", "boundary_GT")
FOLDER_FORMATS = {"boundary_GT": "grabcut", "masks": "auto-half", "gt": "nonzero"}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
MASK_FORMATS = ("auto", "grabcut", "nonzero", "half", "instances")


@dataclass(frozen=True)
class EvalObject:
    """One object to click on. ``image`` may hold the decoded RGB picture for in-memory sets."""

    image_path: Path
    object_id: str
    mask: np.ndarray  # bool (H, W): the object
    ignore: np.ndarray  # bool (H, W): pixels left out of IoU
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def image_name(self) -> str:
        return Path(self.image_path).name


@dataclass(frozen=True)
class Pair:
    """A picture and one of its mask files; a mask file may hold several objects."""

    image_path: Path
    mask_path: Path


def resolve_root(dataset: str | os.PathLike, shared_data: str | os.PathLike = "") -> Path:
    """A folder path, or a bare name looked up under ``shared_data`` (``Settings.shared_data``,
    e.g. ``GrabCut``)."""
    root = Path(dataset).expanduser()
    if root.is_dir():
        return root
    shared = str(shared_data or "")
    if shared and not root.is_absolute() and (Path(shared) / root).is_dir():
        return Path(shared) / root
    raise InputError(f"dataset folder {str(dataset)!r} does not exist")


def _find_dir(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise InputError(f"{root}: no {what} folder (expected one of {', '.join(n + '/' for n in names)})")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def match_pairs(images_dir: Path, masks_dir: Path) -> list[Pair]:
    """Match masks to pictures by stem, else by the part after the first ``_`` (COCO-MVal)."""
    images: dict[str, Path] = {}
    for p in _files(images_dir):
        if p.stem in images:
            log.warning("two pictures share the stem %r; using %s", p.stem, images[p.stem].name)
            continue
        images[p.stem] = p
    pairs, unmatched = [], []
    for m in _files(masks_dir):
        image = images.get(m.stem)
        if image is None and "_" in m.stem:
            image = images.get(m.stem.split("_", 1)[1])
        if image is None:
            unmatched.append(m.name)
        else:
            pairs.append(Pair(image, m))
    if unmatched:
        log.warning("%d mask(s) match no picture in %s, e.g. %s", len(unmatched), images_dir, unmatched[0])
    pairs.sort(key=lambda p: (str(p.image_path), str(p.mask_path)))
    return pairs


def read_mask_file(path: Path) -> np.ndarray:
    """Decode a mask as stored (gray, RGB or 16-bit), dropping any alpha channel."""
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read mask ({exc.strerror or exc})") from None
    raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if raw is None:
        raise InputError(f"{path}: not a readable mask image (corrupt or unsupported format)")
    if raw.ndim == 3:
        raw = raw[:, :, :3].max(axis=2)
    return raw


def _looks_like_instances(raw: np.ndarray) -> bool:
    """16-bit labels, or a gray mask whose non-zero values are all small ids (none > 127)."""
    if raw.dtype == np.uint16:
        return True
    return bool(raw.any()) and int(raw.max()) <= 127


def decode_objects(raw: np.ndarray, fmt: str) -> list[tuple[str | None, np.ndarray, np.ndarray]]:
    """Apply a mask convention: ``[(instance id or None, object, ignore), ...]``.

    ``auto-half`` is the ``masks/`` folder rule: ``half``, unless the mask holds instance ids.
    """
    none = np.zeros(raw.shape, dtype=bool)
    if fmt == "auto-half":
        fmt = "instances" if _looks_like_instances(raw) else "half"
    if fmt == "grabcut":
        return [(None, raw >= 192, (raw >= 64) & (raw < 192))]
    if fmt == "half":
        return [(None, raw > 127, none)]
    if fmt == "nonzero":
        return [(None, raw > 0, none)]
    if fmt == "instances":
        return [(str(int(v)), raw == v, none) for v in np.unique(raw) if v != 0]
    raise InputError(f"unknown mask format {fmt!r}; choose one of {', '.join(MASK_FORMATS)}")


class Dataset:
    """A benchmark folder: matched pairs are listed at once, masks decoded while iterating."""

    def __init__(
        self,
        root: str | os.PathLike,
        mask_format: str = "auto",
        limit: int | None = None,
        shared_data: str | os.PathLike = "",
    ):
        if mask_format not in MASK_FORMATS:
            raise InputError(f"unknown mask format {mask_format!r}; choose one of {', '.join(MASK_FORMATS)}")
        if limit is not None and limit < 1:
            raise InputError(f"limit must be at least 1, got {limit}")
        self.root = resolve_root(root, shared_data)
        self.images_dir = _find_dir(self.root, IMAGE_DIRS, "picture")
        self.masks_dir = _find_dir(self.root, MASK_DIRS, "mask")
        # ``rule`` may be the internal ``auto-half`` (decided per mask); ``mask_format`` is what users see
        self.rule = FOLDER_FORMATS[self.masks_dir.name] if mask_format == "auto" else mask_format
        self.mask_format = self.rule.replace("auto-", "")
        self.limit = limit
        self.pairs = match_pairs(self.images_dir, self.masks_dir)
        if not self.pairs:
            raise InputError(
                f"{self.root}: no mask in {self.masks_dir.name}/ matches a picture in "
                f"{self.images_dir.name}/ by file name"
            )

    @property
    def size_hint(self) -> int:
        """Objects to expect: one per mask file (instance masks may hold more), capped by ``limit``."""
        n = len(self.pairs)
        return min(n, self.limit) if self.limit else n

    def __iter__(self) -> Iterator[EvalObject]:
        count = 0
        for pair in self.pairs:
            if self.limit is not None and count >= self.limit:
                return
            raw = read_mask_file(pair.mask_path)
            for instance, mask, ignore in decode_objects(raw, self.rule):
                if self.limit is not None and count >= self.limit:
                    return
                object_id = pair.mask_path.stem if instance is None else f"{pair.mask_path.stem}:{instance}"
                if not mask.any():
                    log.warning("skipping %s: the mask holds no object pixels", object_id)
                    continue
                count += 1
                yield EvalObject(pair.image_path, object_id, mask, ignore)

    def __repr__(self) -> str:
        return (
            f"Dataset({str(self.root)!r}, images={self.images_dir.name}/, masks={self.masks_dir.name}/, "
            f"format={self.mask_format}, pairs={len(self.pairs)})"
        )


def load_dataset(
    root: str | os.PathLike, mask_format: str = "auto", limit: int | None = None, *, shared_data: str | os.PathLike = ""
) -> Dataset:
    """Open a benchmark folder (see the module docstring for the layouts it understands); a bare
    name is looked up under ``shared_data``."""
    return Dataset(root, mask_format, limit, shared_data)
