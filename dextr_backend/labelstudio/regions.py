"""Label Studio results <-> masks: brush RLE and polygons, in the JSON shapes LS uses.

Percent coordinates are LS's: ``x`` and ``y`` in 0-100 of the original width and height.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError
from .protocol import newest_first


@dataclass
class Region:
    label: str
    mask: np.ndarray  # bool (H, W)


def _labels(value: dict, kind: str) -> str:
    labels = value.get(kind) or value.get("labels") or ["Object"]
    return str(labels[0])


def brush_to_mask(value: dict, height: int, width: int) -> np.ndarray:
    from label_studio_sdk.converter.brush import decode_rle

    if value.get("format", "rle") != "rle" or "rle" not in value:
        raise InputError("brush result without an RLE")
    flat = np.asarray(decode_rle(value["rle"]), dtype=np.uint8)
    if flat.size != height * width * 4:
        raise InputError(f"brush RLE holds {flat.size} values, expected {height}x{width}x4")
    return flat.reshape(height, width, 4)[:, :, 3] > 127


# Label Studio's brush RLE (its ``rle-pack`` format, as ``label_studio_sdk``'s ``encode_rle`` writes
# it): a header of the value count (32 bits), the word size less one (5 bits) and the four run-size
# widths less one (4 bits each), then per run a series flag, the run-size index, length less one
# and the 8-bit value, zero-padded to whole bytes (a whole byte of padding when already whole).
_RUN_WIDTHS = (3, 4, 8, 16)
_LONGEST_RUN = 2**16


def mask_to_brush(mask: np.ndarray) -> list[int]:
    """A bool mask as Label Studio brush RLE, the same bytes as ``label_studio_sdk``'s
    ``mask2rle(mask * 255)``. Runs are found on the mask itself and counted four times (RGBA):
    the SDK copies the picture four times over and keeps int64 arrays of it, about 50 MB for
    3 megapixels, which a 100-object request paid for each object."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    bits = [f"{flat.size * 4:032b}", f"{8 - 1:05b}", "".join(f"{w - 1:04b}" for w in _RUN_WIDTHS)]
    if flat.size:
        ends = np.append(np.flatnonzero(flat[1:] != flat[:-1]), flat.size - 1)
        lengths = np.diff(ends, prepend=-1) * 4
        for length, on in zip(lengths.tolist(), flat[ends].tolist()):
            value = "11111111" if on else "00000000"
            while length > _LONGEST_RUN:
                bits.append(f"111{_LONGEST_RUN - 1:016b}{value}")
                length -= _LONGEST_RUN
            index = next(i for i, w in enumerate(_RUN_WIDTHS) if length <= 2**w)
            bits.append(f"1{index:02b}{length - 1:0{_RUN_WIDTHS[index]}b}{value}")
    text = "".join(bits)
    text += "0" * (8 - len(text) % 8)
    return [int(text[i : i + 8], 2) for i in range(0, len(text), 8)]


def polygon_to_mask(value: dict, height: int, width: int) -> np.ndarray:
    pts = np.asarray(value.get("points") or [], dtype=np.float64)
    if pts.ndim != 2 or len(pts) < 3:
        raise InputError("polygon result with fewer than 3 points")
    px = np.round(pts * [width / 100.0, height / 100.0]).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [px], 1)
    return mask.astype(bool)


def result_regions(results: list[dict]) -> list[Region]:
    """Objects of one annotation's ``result`` list (brushlabels and polygonlabels; others skipped)."""
    regions = []
    for r in results or []:
        kind = r.get("type")
        if kind not in ("brushlabels", "polygonlabels"):
            continue
        h, w = int(r.get("original_height", 0)), int(r.get("original_width", 0))
        if h <= 0 or w <= 0:
            raise InputError(f"{kind} result without original_width/original_height")
        value = r.get("value") or {}
        mask = brush_to_mask(value, h, w) if kind == "brushlabels" else polygon_to_mask(value, h, w)
        if mask.any():
            regions.append(Region(_labels(value, kind), mask))
    return regions


def accepted_annotation(task: dict) -> dict | None:
    """The newest annotation that was not cancelled (skipped), if any."""
    anns = task.get("annotations") or []
    if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
        raise InputError(f"task {str(task.get('id'))[:40]}: 'annotations' must be a list of objects")
    anns = newest_first([a for a in anns if not a.get("was_cancelled")], f"task {str(task.get('id'))[:40]}")
    return anns[0] if anns else None
