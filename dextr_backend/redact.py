"""Secrets out of anything a person or a log can read: URLs lose their passwords.

Two rules hold for every function here (issue 26):

- the cost is linear in the input: a task's URL may be a megabyte long, and a backtracking
  pattern over it held the interpreter (and every other request) for minutes. No pattern here
  can backtrack further than the segment it is looking at, and segments do not overlap;
- only the secret is replaced: the text around it, separators included, comes back as it was.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import cast

MASK = "***"
SECRET_WORDS = ("token", "password", "passwd", "secret", "key", "auth", "signature", "credential")

# After "://": the authority, up to the first "/" or space; user info is what precedes its last "@".
_AUTHORITY = re.compile(r"[^/\s]*")
# A query or fragment: from "?" or "#" to the end of the URL (space, quote or angle bracket).
_PARAMS = re.compile(r"[?#][^\s\"'<>`]*")
_PROSE = ".,:;!?)]}"  # at the very end of a URL these end the sentence, not the value
# One "name=value" of it, tried only just after a separator (so no attempt rescans another's
# text); the value ends where the next pair, the fragment or the URL does.
_PAIR = re.compile(r"(?<=[?#&;])([^&;=#?\s\"'<>`]*)=([^&;#\s\"'<>`]*)")


def redact_url(url: str | None) -> str | None:
    """``redis://:hunter2@host:6379/0`` -> ``redis://:***@host:6379/0``; a user name stays, a password
    never does. Query and fragment values named like secrets (``token``, ``password``, ``key``,
    ...) become ``***`` too."""
    if not url:
        return url
    return redact_text(str(url))


def redact_text(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """Every URL in ``text`` redacted, and every given secret value replaced by ``***``."""
    out = _mask_params(_mask_userinfo(str(text)))
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, MASK)
    return out


def shorten(text: str, limit: int = 200, secrets: tuple[str | None, ...] = ()) -> str:
    """At most ``limit`` characters of ``text`` (then ``...``), redacted, as a message may quote it.

    Cut first, then masked, so that quoting a megabyte costs no more than quoting ``limit``
    characters; a password or secret that the cut splits is masked all the same."""
    text = str(text)
    if len(text) <= limit:
        return redact_text(text, secrets)
    cut = text[:limit]
    start = cut.rfind("://")
    if start != -1:
        authority = cut[start + 3 :]
        if _AUTHORITY.fullmatch(authority) and "@" not in authority and ":" in authority:  # "x://user:pa|ss@" cut
            cut = cut[: start + 3] + authority.split(":", 1)[0] + ":" + MASK
    for secret in secrets:
        if secret and len(secret) >= 4:
            for n in range(min(len(secret), len(cut)), 3, -1):  # a secret's first part ends the cut
                if cut.endswith(secret[:n]):
                    cut = cut[:-n] + MASK
                    break
    return redact_text(cut, secrets) + "..."


def _mask_userinfo(text: str) -> str:
    """``scheme://user:password@`` -> ``scheme://user:***@``, wherever ``://`` occurs."""
    pieces, done = [], 0
    at = text.find("://")
    while at != -1:
        begin = at + 3
        end = cast(re.Match[str], _AUTHORITY.match(text, begin)).end()  # ``[^/\s]*`` matches anywhere, if empty
        userinfo = text.rfind("@", begin, end)
        if userinfo != -1:
            user, sep, _ = text[begin:userinfo].partition(":")
            if sep:
                pieces += [text[done:begin], user, ":", MASK]
                done = userinfo
        at = text.find("://", max(begin, end - 2))  # "a://b://": the next one starts before ``end``
    pieces.append(text[done:])
    return "".join(pieces)


def _mask_params(text: str) -> str:
    """Values of secret-named ``name=value`` pairs in every URL's query and fragment."""
    if "://" not in text:
        return text
    pieces, done = [], 0
    for params in _PARAMS.finditer(text, text.find("://")):
        for pair in _PAIR.finditer(text, params.start(), params.end()):
            value = pair.group(2)
            if pair.end(2) == params.end():  # "...?token=abc, then": the comma is prose
                value = value.rstrip(_PROSE)
            if value and _secret_name(pair.group(1)):
                pieces += [text[done : pair.start(2)], MASK]
                done = pair.start(2) + len(value)
    pieces.append(text[done:])
    return "".join(pieces)


def _secret_name(name: str) -> bool:
    name = urllib.parse.unquote_plus(name).lower()
    return name == "sig" or any(word in name for word in SECRET_WORDS)  # "sig": Azure's SAS signature
