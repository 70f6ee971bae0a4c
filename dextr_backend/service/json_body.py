"""A request body as strict, bounded JSON, whichever tool sent it: no NaN or Infinity, at most
``MAX_JSON_DEPTH`` levels deep, and no string longer than ``DEXTR_MAX_STRING_KB`` (an image
payload: ``DEXTR_MAX_IMAGE_MB``). The Label Studio server and the nuclio function read bodies
through here, so a hostile body costs the same bounded work in both."""

from __future__ import annotations

import json

from ..errors import InputError, MalformedRequest, RequestTooLarge
from ..settings import Settings

MAX_JSON_DEPTH = 64  # Label Studio's deepest bodies nest about 8 levels
DATA_IMAGE = "data:image/"


def is_data_image(value) -> bool:
    """Whether ``value`` is an image payload written as a ``data:image/...`` URI, not a URL."""
    return isinstance(value, str) and value[: len(DATA_IMAGE)].lower() == DATA_IMAGE


def check_size(size: int, settings: Settings) -> None:
    """A body of ``size`` bytes within ``DEXTR_MAX_BODY_MB``."""
    if size > settings.max_body_mb * 1024 * 1024:
        raise RequestTooLarge(f"body of {size} bytes exceeds {settings.max_body_mb} MB (DEXTR_MAX_BODY_MB)")


def parse_json(raw: bytes):
    """A request body as JSON, or :class:`MalformedRequest` saying why not."""

    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(raw or b"null", parse_constant=no_constants)
    except RecursionError:
        raise MalformedRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise MalformedRequest(f"body is not valid JSON: {str(exc)[:200]}") from None


def check_body(body, settings: Settings, images_at: tuple[tuple, ...] = ()) -> None:
    """Depth and string lengths, in one iterative walk (no recursion to exhaust). A
    ``data:image/...`` string, or any string at a path of ``images_at`` (CVAT's base64 frame at
    ``("image",)``), is an image, bounded by ``DEXTR_MAX_IMAGE_MB`` in base64 instead."""
    limit = settings.max_string_kb * 1024
    image_limit = 4 * (settings.max_image_mb * 1024 * 1024 + 2) // 3 + 100
    stack: list[tuple[object, int, tuple[str | int, ...]]] = [(body, 1, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            image = is_data_image(item) or path in images_at
            if len(item) > (image_limit if image else limit):
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p[:40]}" for p in path).lstrip(".")
                bound = (
                    f"{settings.max_image_mb} MB of image (DEXTR_MAX_IMAGE_MB)"
                    if image
                    else f"{settings.max_string_kb} KB (DEXTR_MAX_STRING_KB)"
                )
                raise InputError(
                    f"the string at {where or 'the top'} is {len(item)} characters long; the limit is {bound}"
                )
            continue
        if isinstance(item, dict):
            children = list(item.items())
            stack.extend((key, depth, path) for key in item)
        elif isinstance(item, list):
            children = list(enumerate(item))
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise MalformedRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels")
        stack.extend(
            (child, depth + 1, path + (key,)) for key, child in children if isinstance(child, (str, dict, list))
        )
