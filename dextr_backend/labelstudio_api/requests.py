"""Reading a request before any route sees it: basic auth, ``application/json`` only, a body within
``DEXTR_MAX_BODY_MB``, and JSON that is strict (no NaN or Infinity), at most ``MAX_JSON_DEPTH``
levels deep, with no string longer than ``DEXTR_MAX_STRING_KB`` and no image URL longer than
``DEXTR_MAX_URL_CHARS``: every limit is checked before any work is done with the body."""

from __future__ import annotations

import base64
import binascii
import secrets

from fastapi import Request

from ..errors import InputError, MalformedRequest, RequestTooLarge
from ..labelstudio.protocol import LabelConfig
from ..service.json_body import check_body, check_size, is_data_image, parse_json
from ..settings import Settings


class UnsupportedMediaType(MalformedRequest):
    """A body that is not ``application/json`` (HTTP 415). A web page may post ``text/plain`` or a
    form to any site without the browser asking that site first (no CORS preflight); JSON it may not."""


def check_image_urls(tasks: list[dict], config: LabelConfig, settings: Settings) -> None:
    """Every task's image URL within ``DEXTR_MAX_URL_CHARS`` (a ``data:image`` URI is the image, not a URL)."""
    keys = set(config.images.values())
    for task in tasks:
        data = task.get("data")
        if not isinstance(data, dict):
            continue
        for key in keys:
            url = data.get(key)
            image = is_data_image(url)
            if isinstance(url, str) and len(url) > settings.max_url_chars and not image:
                raise InputError(
                    f"task {str(task.get('id'))[:40]}: the image URL under data[{key[:40]!r}] is "
                    f"{len(url)} characters long; the limit is {settings.max_url_chars} "
                    "(DEXTR_MAX_URL_CHARS)"
                )


def check_url_length(name: str, value, settings: Settings) -> None:
    """A URL field other than a task's (``/setup``'s ``hostname``) within ``DEXTR_MAX_URL_CHARS``."""
    if isinstance(value, str) and len(value) > settings.max_url_chars:
        raise InputError(
            f"'{name}' is {len(value)} characters long; the limit is {settings.max_url_chars} (DEXTR_MAX_URL_CHARS)"
        )


async def read_json(request: Request, settings: Settings):
    """The body as JSON: refused unless its Content-Type is ``application/json``, refused from its
    Content-Length or as soon as it streams past the limit, then checked by :func:`check_body`."""
    media = request.headers.get("content-type", "")
    if media.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"{request.url.path} takes a JSON body: send Content-Type: application/json "
            f"(this request said {media[:60] or 'nothing'!r})"
        )
    limit = settings.max_body_mb * 1024 * 1024
    length = request.headers.get("content-length", "")
    if length.isdigit():
        check_size(int(length), settings)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise RequestTooLarge(f"body exceeds {settings.max_body_mb} MB (DEXTR_MAX_BODY_MB)")
    body = parse_json(bytes(raw))
    del raw
    check_body(body, settings)
    return body


def authorized(request: Request, settings: Settings) -> bool:
    """Whether the request carries ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS`` (compared in constant time)."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return secrets.compare_digest(user, settings.basic_auth_user or "") and secrets.compare_digest(
        password, settings.basic_auth_pass or ""
    )
