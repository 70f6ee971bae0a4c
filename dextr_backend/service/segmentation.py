"""The tool-neutral seam: pictures and prompts in, masks out, the same for every tool and mode.

A tool (Label Studio, CVAT) parses its own input into :class:`SegmentItem` s: which picture
(:class:`ImageRef`), which :class:`~dextr_backend.service.prompts.Prompt`, and the pixel frame
the prompt was measured in. A segmenter answers ``segment(items, deadline)`` with the
:class:`Segments`: the version that made them and one :class:`Segment` per item, in order, made
lazily so that a request of many objects never holds all of their masks at once. The tool then
encodes the masks in its own format.

:class:`LocalSegmenter` computes in this process. A queue worker runs :func:`run_job` on a job
made by :func:`job_payload` (plain data: URLs, clicks and a deadline, never a tool's request body
or credentials) and sends the masks back packed (:func:`pack_mask`), so the API's
queue segmenter answers through the same interface.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from ..errors import InputError, ServiceTimeout
from ..predictor import DextrPredictor
from .prompts import Prompt


@dataclass(frozen=True)
class ImageRef:
    """A picture by URL, and the project whose connection fetches it (None: allowed hosts only).
    Which credentials go where is the image source's rule, never the reference's."""

    url: str
    project: int | None = None


@dataclass(frozen=True)
class SegmentItem:
    """One object to segment: its picture, its prompt in pixels, and the ``(width, height)`` those
    pixels were measured in (the tool's idea of the picture's size, which may differ from the
    decoded one, e.g. after an EXIF rotation)."""

    image: ImageRef
    prompt: Prompt
    frame: tuple[int, int]

    def to_json(self) -> dict:
        p = self.prompt
        return {
            "url": self.image.url,
            "project": self.image.project,
            "frame": list(self.frame),
            "points": p.extreme_points.tolist(),
            "positives": p.positives.tolist(),
            "negatives": p.negatives.tolist(),
        }

    @classmethod
    def from_json(cls, data) -> SegmentItem:
        """The item a job carries, checked again: a worker does not trust what it is handed."""
        try:
            project = data["project"]
            if project is not None and (isinstance(project, bool) or not isinstance(project, int)):
                raise TypeError("project")
            width, height = (int(v) for v in data["frame"])
            prompt = Prompt(*(_points(data[k]) for k in ("points", "positives", "negatives")))
            url = data["url"]
            if not isinstance(url, str) or len(prompt.extreme_points) != 4 or min(width, height) < 1:
                raise ValueError("item")
        except (KeyError, TypeError, ValueError):
            raise InputError("a segmentation job's item is malformed") from None
        return cls(ImageRef(url, project), prompt, (width, height))


def _points(value) -> np.ndarray:
    points = np.asarray(value, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise ValueError("points")
    return points


@dataclass
class Segment:
    mask: np.ndarray  # bool (H, W), the size of the decoded picture
    score: float


class Segments(NamedTuple):
    version: str  # the weights version that made them
    masks: Iterator[Segment]  # one per item, in order, made as they are read


class ImageSource(Protocol):
    """Decoded RGB pictures by reference, within the fetch rules of whoever made the source."""

    def get(self, ref: ImageRef, deadline: float) -> np.ndarray: ...


class Segmenter(Protocol):
    def segment(self, items: Sequence[SegmentItem], deadline: float) -> Segments: ...


def in_frame(prompt: Prompt, frame: tuple[int, int], width: int, height: int) -> Prompt:
    """``prompt`` measured in ``frame`` moved to a ``width`` x ``height`` picture (clicks stay inside it)."""
    if frame == (width, height):
        return prompt
    scale = np.array([width / frame[0], height / frame[1]])
    limit = np.array([width - 1.0, height - 1.0])
    return Prompt(*(np.minimum(p * scale, limit) for p in (prompt.extreme_points, prompt.positives, prompt.negatives)))


def timeout_error(timeout: float) -> ServiceTimeout:
    return ServiceTimeout(
        f"the request took longer than {timeout:g} s (DEXTR_PREDICT_TIMEOUT); "
        "send fewer tasks or objects at once, or raise it"
    )


def predict_items(
    predictor: DextrPredictor, items: Sequence[SegmentItem], images: ImageSource, deadline: float, timeout: float
) -> Iterator[Segment]:
    """The masks of ``items``, ``predictor.batch_size`` objects per network pass, each pass's masks
    given out before the next pass starts; :class:`ServiceTimeout` once ``deadline`` (monotonic) passes."""
    batch = max(1, predictor.batch_size)
    # The objects of one picture come together: the picture is asked for once per run of them (a
    # source may look up the project's connection for each ask), and only the last one is held.
    last: tuple[ImageRef, np.ndarray] | None = None
    for start in range(0, len(items), batch):
        if time.monotonic() > deadline:
            raise timeout_error(timeout)
        inputs = []
        for item in items[start : start + batch]:
            if last is None or last[0] != item.image:
                last = (item.image, images.get(item.image, deadline))
            image = last[1]
            p = in_frame(item.prompt, item.frame, image.shape[1], image.shape[0])
            # The extreme points (pass 1), then every correction at once (pass 2, versions that take them).
            inputs.append((image, p.extreme_points, p.positives, p.negatives))
        if time.monotonic() > deadline:
            raise timeout_error(timeout)
        for pred in predictor.predict_batch(inputs):
            yield Segment(pred.mask, pred.score)


class _Picture:
    """The image source of one picture already in memory."""

    def __init__(self, image: np.ndarray):
        self.image = image

    def get(self, ref: ImageRef, deadline: float) -> np.ndarray:
        return self.image


def segment_picture(predictor: DextrPredictor, image: np.ndarray, prompt: Prompt) -> Segment:
    """One object of a picture the tool sent itself (CVAT sends the frame), by the same path as
    every other segmentation."""
    item = SegmentItem(ImageRef("memory:"), prompt, (image.shape[1], image.shape[0]))
    return next(predict_items(predictor, [item], _Picture(image), float("inf"), 0.0))


class LocalSegmenter:
    """Segments computed in this process, on its resident predictor (anything with ``get()``
    returning a :class:`DextrPredictor`), with pictures from ``images``."""

    def __init__(self, resident, images: ImageSource, timeout: float):
        self.resident, self.images, self.timeout = resident, images, timeout

    def segment(self, items: Sequence[SegmentItem], deadline: float) -> Segments:
        predictor = self.resident.get()
        return Segments(predictor.version, predict_items(predictor, list(items), self.images, deadline, self.timeout))


# --------------------------------------------------------------------------- the queue's job


def job_payload(items: Sequence[SegmentItem], deadline: float) -> dict:
    """A queue job for ``items``: plain data, with the deadline as wall-clock time (a worker's
    monotonic clock is not the API's)."""
    return {"items": [item.to_json() for item in items], "deadline": time.time() + (deadline - time.monotonic())}


def job_items(payload) -> tuple[list[SegmentItem], float | None]:
    """The items and monotonic deadline of a job (None where it carries none)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise InputError("a segmentation job needs a list of 'items'")
    wall = payload.get("deadline")
    deadline = None
    if isinstance(wall, (int, float)) and not isinstance(wall, bool) and np.isfinite(wall):
        deadline = time.monotonic() + float(wall) - time.time()
    return [SegmentItem.from_json(item) for item in payload["items"]], deadline


def run_job(payload, predictor: DextrPredictor, images: ImageSource, timeout: float) -> dict:
    """What a worker answers: ``{"version", "masks": [packed mask, score] ...}``. Errors are raised;
    the caller turns them into data."""
    items, deadline = job_items(payload)
    deadline = deadline if deadline is not None else time.monotonic() + timeout
    masks = [[pack_mask(s.mask), round(s.score, 6)] for s in predict_items(predictor, items, images, deadline, timeout)]
    return {"version": predictor.version, "masks": masks}


def segments_from_job(answer: dict) -> Segments:
    """The worker's answer (:func:`run_job`) as :class:`Segments`, each mask unpacked when it is read."""
    return Segments(answer["version"], (Segment(unpack_mask(m), float(s)) for m, s in answer["masks"]))


def pack_mask(mask: np.ndarray) -> dict:
    """A bool mask as a few compressed bytes (a picture's mask packs to about a kilobyte)."""
    height, width = mask.shape
    return {"size": [height, width], "bits": zlib.compress(np.packbits(mask.ravel()).tobytes(), 1)}


def unpack_mask(packed: dict) -> np.ndarray:
    height, width = packed["size"]
    bits = np.frombuffer(zlib.decompress(packed["bits"]), dtype=np.uint8)
    return np.unpackbits(bits, count=height * width).reshape(height, width).astype(bool)
