"""Reading and checking images: every image enters the pipeline as RGB uint8 (H, W, 3)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError
from .settings import max_image_pixels


def as_rgb(image) -> np.ndarray:
    """Accept gray, RGB or RGBA uint8 arrays; return contiguous RGB uint8 (H, W, 3)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputError(f"image must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise InputError(f"image must be (H, W, 3) RGB, got shape {arr.shape}")
    return np.ascontiguousarray(arr[:, :, :3])


def decode_image(data: bytes, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Decode encoded bytes (JPEG, PNG, BMP, ...) to RGB uint8, refusing corrupt or huge images.

    Decompression-bomb guard: a 50-megapixel photo is fine, a 30k x 30k PNG is not. The limit is
    ``max_pixels`` (a server passes its ``Settings.max_image_pixels``), else
    ``DEXTR_MAX_IMAGE_PIXELS`` as the environment says now. OpenCV refuses a larger picture before
    allocating it, by the limit the environment gave it when the package was imported."""
    limit = int(max_pixels) if max_pixels else max_image_pixels()
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise InputError(f"{name}: empty file")
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        if "MAX_IMAGE_PIXELS" in str(exc):
            raise InputError(f"{name}: image has more than {limit} pixels (DEXTR_MAX_IMAGE_PIXELS)") from None
        raise InputError(f"{name}: not a readable image ({str(exc).strip().splitlines()[-1][:120]})") from None
    if image is None:
        raise InputError(f"{name}: not a readable image (corrupt or unsupported format)")
    if image.shape[0] * image.shape[1] > limit:
        raise InputError(f"{name}: {image.shape[1]}x{image.shape[0]} exceeds {limit} pixels (DEXTR_MAX_IMAGE_PIXELS)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8, with a one-line error for missing or unreadable files."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(p))


WRITE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def check_output_path(path: str | os.PathLike, exts: tuple[str, ...] = WRITE_EXTS) -> Path:
    """An output file path whose folder exists and whose extension names a format we write.

    A missing folder is refused rather than created: a typo in ``-o`` should not grow a tree.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a folder: give a file name such as {p / ('mask' + exts[0])}")
    if p.suffix.lower() not in exts:
        raise InputError(f"{p}: unknown extension {p.suffix or '(none)'!r}; use one of {', '.join(exts)}")
    if not p.parent.is_dir():
        raise InputError(f"{p}: folder {p.parent} does not exist (create it first)")
    return p


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB (or single-channel) uint8 array; the format follows the file extension."""
    p = check_output_path(path)
    arr = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    try:
        written = cv2.imwrite(str(p), arr)
    except cv2.error:
        written = False
    if not written:
        raise InputError(f"{p}: cannot write image (is the folder writable?)")
