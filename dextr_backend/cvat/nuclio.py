"""DEXTR as a CVAT nuclio interactor: request parsing and answers (``docker/nuclio/dextr/main.py`` is the shim).

CVAT's lambda manager posts, for every click once ``min_pos_points`` are placed::

    {"image": "<base64 frame>", "pos_points": [[x, y], ...], "neg_points": [[x, y], ...],
     "obj_bbox": [[x1, y1], [x2, y2]] | null, "threshold": ...}

and a version-2 interactor answers ``{"mask": <H x W 0/1 rows for the whole frame>, "points":
[[x, y], ...]}`` (the outline of the largest piece; CVAT draws from the mask).

Four positive points are the extreme points; with fewer, a box stands in; further positive
points and all negative points are corrective clicks (:mod:`dextr_backend.cvat.prompts`), which
``function.yaml`` offers with ``min_neg_points: 0``. ``threshold`` is accepted and ignored: each
weights version records its own.

Every bad request is answered with ``{"error": "..."}``: 400 when the body is not a JSON object,
422 when its content is wrong (no image, corrupt base64 or picture, too few points, points
outside the frame), missing or broken weights 503, by
the one table of ``errors.http_status``; a bug is answered 500 and logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from dataclasses import dataclass, field

import numpy as np

from ..errors import DextrError, InputError, MalformedRequest, http_status
from ..imageio import decode_image
from ..postprocess import mask_to_polygons
from ..service import resident
from ..service.cache import ImageCache, shared_cache
from ..service.json_body import check_body, check_size, parse_json
from ..service.prompts import Prompt
from ..service.segmentation import segment_picture
from ..settings import Settings
from .prompts import cvat_prompt


@dataclass
class Request:
    image: np.ndarray  # RGB uint8 (H, W, 3)
    points: np.ndarray  # (4, 2) extreme points in pixels
    positives: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # corrective clicks
    negatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


def _body_dict(body, settings: Settings) -> dict:
    """``event.body``: bytes or str of JSON, or a dict where nuclio already decoded it; read by
    the same bounded JSON rules as the Label Studio server's bodies (``service.json_body``)."""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    if isinstance(body, (bytes, bytearray, memoryview)):
        check_size(len(body), settings)
        if not bytes(body).strip():
            raise MalformedRequest("request body is empty; expected a JSON object with 'image' and 'pos_points'")
        body = parse_json(bytes(body))
    if not isinstance(body, dict):
        raise MalformedRequest("request body must be a JSON object with 'image' and 'pos_points'")
    check_body(body, settings, images_at=(("image",),))
    return body


def _image_bytes(value) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise InputError("'image' is missing: expected the frame as a base64 string")
    text = value.strip()
    if text.startswith("data:") and "," in text:  # a data URL is fine too
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("'image' is not valid base64") from None


def decode_frame(value, cache: ImageCache | None = None, max_pixels: int | None = None) -> np.ndarray:
    """The base64 frame as RGB; decoded frames are cached by content, since every click resends it."""
    key = None
    if cache is not None and isinstance(value, str):
        key = hashlib.sha1(value.encode("utf-8", "surrogatepass")).hexdigest()
        cached = cache.get(key)
        if cached is not None:
            return cached
    image = decode_image(_image_bytes(value), "'image'", max_pixels)
    if key is not None and cache is not None:  # a key is only made with a cache
        cache.put(key, image)
    return image


def parse_request(body, cache: ImageCache | None = None, settings: Settings | None = None) -> Request:
    """Check and decode a CVAT interactor request; :class:`InputError` says what is wrong."""
    settings = settings or Settings.from_env()
    data = _body_dict(body, settings)
    for key in ("pos_points", "neg_points"):
        if data.get(key) is not None and not isinstance(data[key], list):
            raise InputError(f"'{key}' must be a list of [x, y] pairs")
    image = decode_frame(data.get("image"), cache, settings.max_image_pixels)
    height, width = image.shape[:2]
    prompt = cvat_prompt(data.get("pos_points"), data.get("neg_points"), data.get("obj_bbox"), width, height)
    if prompt is None:
        got = len(data.get("pos_points") or [])
        raise InputError(f"need at least 4 positive points (the object's extreme points) or a box, got {got}")
    return Request(image=image, points=prompt.extreme_points, positives=prompt.positives, negatives=prompt.negatives)


def mask_json(mask: np.ndarray) -> str:
    """``mask`` as JSON rows of 0/1, built with numpy: ``json.dumps`` of a full-HD list takes a second."""
    h, w = mask.shape
    row = np.empty((h, 2 * w + 2), dtype=np.uint8)  # "[d,d,...,d],"
    row[:, 0] = ord("[")
    row[:, 1 : 2 * w : 2] = np.asarray(mask, dtype=np.uint8) + ord("0")
    row[:, 2 : 2 * w - 1 : 2] = ord(",")
    row[:, 2 * w] = ord("]")
    row[:, 2 * w + 1] = ord(",")
    return "[" + row.tobytes()[:-1].decode("ascii") + "]"


def answer(predictor, request: Request) -> str:
    """The version-2 response body: the full-frame mask and the largest piece's outline."""
    pred = segment_picture(predictor, request.image, Prompt(request.points, request.positives, request.negatives))
    polygons = mask_to_polygons(pred.mask, epsilon=1.0)
    outline = max(polygons, key=lambda p: len(p.exterior)).exterior if polygons else np.zeros((0, 2))
    points = json.dumps(np.round(np.asarray(outline, dtype=np.float64), 2).tolist())
    return f'{{"mask":{mask_json(pred.mask)},"points":{points},"score":{pred.score:.4f}}}'


def _error(message: str) -> str:
    return json.dumps({"error": message})


def handle(
    serving, body, cache: ImageCache | None = None, logger=None, settings: Settings | None = None
) -> tuple[int, str]:
    """``(status, JSON text)`` for one request body, answered by ``serving.get()`` (the resident
    predictor, or a pinned one); never raises."""
    try:
        request = parse_request(body, cache, settings)
        return 200, answer(serving.get(), request)
    except DextrError as exc:
        status = http_status(exc)
        if logger is not None and status >= 500:  # weights missing or broken: the deployment's fault
            logger.error(f"DEXTR cannot answer: {exc}")
        return status, _error(str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug: log it, answer without internals
        if logger is not None:
            logger.error(f"DEXTR request crashed: {type(exc).__name__}: {exc}")
        return 500, _error("internal error; see the function's log")


# --------------------------------------------------------------------------- nuclio entry points
class _State:
    """What ``init_context`` keeps in ``context.user_data``."""

    def __init__(self, serving, cache: ImageCache, settings: Settings):
        self.serving = serving  # .get() -> the predictor of the version to serve now
        self.cache = cache
        self.settings = settings
        self.lock = threading.Lock()


def init_context(context, predictor=None) -> None:
    """Load the model once per nuclio worker (weights ``$DEXTR_WEIGHTS``, device ``$DEXTR_DEVICE``):
    the process's resident predictor and image cache, or ``predictor`` when one is given."""
    settings = Settings.from_env()
    serving = resident.PinnedPredictor(predictor) if predictor is not None else resident.shared(settings)
    predictor = serving.get()  # load now: a broken deployment fails here, not on a click
    context.user_data.dextr = _State(serving, shared_cache(settings), settings)
    context.logger.info(f"DEXTR weights {predictor.version} loaded on {predictor.device}")


def handler(context, event):
    """One interactor request: 200 with the mask, 4xx with a message for bad input."""
    state = getattr(context.user_data, "dextr", None)
    if state is None:  # init_context failed or was not run: try once more
        try:
            init_context(context)
            state = context.user_data.dextr
        except Exception as exc:  # noqa: BLE001 - reported to the caller, not raised
            context.logger.error(f"DEXTR model could not be loaded: {exc}")
            status, body = 503, _error(f"model could not be loaded: {exc}")
            return context.Response(body=body, headers={}, content_type="application/json", status_code=status)
    with state.lock:
        status, body = handle(state.serving, event.body, state.cache, context.logger, state.settings)
    if 400 <= status < 500:
        context.logger.info(f"DEXTR bad request: {json.loads(body)['error']}")
    return context.Response(body=body, headers={}, content_type="application/json", status_code=status)
