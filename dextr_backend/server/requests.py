"""Reading a request before any route sees it: basic auth, a body within ``DEXTR_MAX_BODY_MB``,
and JSON that is strict (no NaN or Infinity) and at most ``MAX_JSON_DEPTH`` levels deep."""

from __future__ import annotations

import base64
import binascii
import json
import secrets

from fastapi import Request

from ..errors import MalformedRequest, RequestTooLarge
from ..settings import Settings

MAX_JSON_DEPTH = 64       # Label Studio's deepest bodies nest about 8 levels


def json_depth_within(value, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` containers deep (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def parse_json(raw: bytes):
    """A request body as JSON, or :class:`MalformedRequest` saying why not."""
    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    try:
        body = json.loads(raw or b"null", parse_constant=no_constants)
    except RecursionError:
        raise MalformedRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise MalformedRequest(f"body is not valid JSON: {str(exc)[:200]}") from None
    if not json_depth_within(body, MAX_JSON_DEPTH):
        raise MalformedRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


async def read_json(request: Request, settings: Settings):
    """The body as JSON, refused from its Content-Length, or as soon as it streams past the limit."""
    limit = settings.max_body_mb * 1024 * 1024
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise RequestTooLarge(f"body of {int(length)} bytes exceeds {settings.max_body_mb} MB (DEXTR_MAX_BODY_MB)")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise RequestTooLarge(f"body exceeds {settings.max_body_mb} MB (DEXTR_MAX_BODY_MB)")
    return parse_json(bytes(raw))


def authorized(request: Request, settings: Settings) -> bool:
    """Whether the request carries ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS`` (compared in constant time)."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return (secrets.compare_digest(user, settings.basic_auth_user or "")
            and secrets.compare_digest(password, settings.basic_auth_pass or ""))
