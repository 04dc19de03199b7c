"""One scrubber for every text that came from outside (API errors, task errors).

APIMart's error texts are third-party words: a proxy may echo the request's headers, a task
error may quote the `Authorization: Bearer sk-…` it was called with, URL-encoded or not. Such
a text is stored, logged, printed by the CLI and posted to a Discord channel, so it is scrubbed
once, here, before any of that: the secrets this process holds (the API key, the Discord
token; registered at start-up), any `Bearer …` token, NUL bytes (PostgreSQL refuses them in
text columns) and control characters; then it is shortened.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

#: Outside texts are cut to this many characters (a whole HTML error page helps nobody).
MAX_OUTSIDE_TEXT = 500
#: What a removed secret becomes.
REDACTED = "***"
#: Secrets shorter than this are not registered (scrubbing "a" everywhere would garble text).
MIN_SECRET_LENGTH = 6

_BEARER = re.compile(r"(Bearer|Basic|Token)(\s+|%20|\+)[^\s\"'<>,;&]+", re.IGNORECASE)
_API_KEY_SHAPE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_secrets: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Remember a secret this process holds, so no outside text can carry it further."""
    if secret and len(secret) >= MIN_SECRET_LENGTH:
        _secrets.add(secret)


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(quote(secret, safe=""))}


def scrub(text: str | None, *, limit: int = MAX_OUTSIDE_TEXT) -> str | None:
    """`text` without secrets, bearer tokens, NULs or control characters, at most `limit` long.

    Secrets are removed from the whole text before it is cut, so no part of one survives a cut.
    """
    if text is None:
        return None
    for secret in sorted(_secrets, key=len, reverse=True):
        for form in _forms(secret):
            if form in text:
                text = text.replace(form, REDACTED)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _API_KEY_SHAPE.sub(REDACTED, text)
    text = _CONTROL.sub(" ", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
