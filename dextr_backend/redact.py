"""Secrets out of anything a person or a log can read: URLs lose their passwords."""

from __future__ import annotations

import re
import urllib.parse

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]*)@")


def redact_url(url: str | None) -> str | None:
    """``redis://:hunter2@host:6379/0`` -> ``redis://:***@host:6379/0``; a user name stays, a password
    never does. Query parameters named like secrets (``token``, ``password``, ``key``) are masked too."""
    if not url:
        return url

    def userinfo(match: re.Match) -> str:
        user, sep, _ = match.group("userinfo").partition(":")
        return f"{match.group('scheme')}{user}{':***' if sep else ''}@"

    text = _USERINFO.sub(userinfo, str(url))
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:              # not a URL after all (e.g. "http://[::1"): nothing more to mask
        return text
    if parts.query:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if any(_secret_name(k) for k, _ in pairs):
            query = "&".join(f"{k}={'***' if _secret_name(k) else v}" for k, v in pairs)
            text = urllib.parse.urlunsplit(parts._replace(query=query))
    return text


def redact_text(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """Every URL in ``text`` redacted, and every given secret value replaced by ``***``."""
    out = re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", lambda m: redact_url(m.group(0)), str(text))
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "***")
    return out


def _secret_name(name: str) -> bool:
    return any(word in name.lower() for word in ("token", "password", "passwd", "secret", "key", "auth"))
