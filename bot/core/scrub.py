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

#: Outside texts are cut to this many characters (a whole HTML error page helps nobody).
MAX_OUTSIDE_TEXT = 500
#: What a removed secret becomes.
REDACTED = "***"
#: Secrets shorter than this are not registered (scrubbing "a" everywhere would garble text).
MIN_SECRET_LENGTH = 6

_BEARER = re.compile(r"(Bearer|Basic|Token)(\s+|%20|\+)[^\s\"'<>,;&]+", re.IGNORECASE)
_API_KEY_SHAPE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

#: Registered secrets, each with the pattern that finds it however it was URL-encoded.
_secrets: dict[str, re.Pattern[str]] = {}


def register_secret(secret: str | None) -> None:
    """Remember a secret this process holds, so no outside text can carry it further."""
    if secret and len(secret) >= MIN_SECRET_LENGTH and secret not in _secrets:
        _secrets[secret] = _encoded_forms(secret)


def _encoded_forms(secret: str) -> re.Pattern[str]:
    """The secret with each character as itself or percent-encoded (either hex case, even
    encoded twice, `+` for a space): a proxy may encode only some bytes (`%2D` for `-`), so
    a list of whole encodings (`quote`, `quote_plus`) would miss it."""
    parts = []
    for char in secret:
        alternatives = [re.escape(char)]
        if char == " ":
            alternatives.append(r"\+")
        alternatives.append("".join(f"%(?:25)?{b:02x}" for b in char.encode()))
        parts.append(f"(?:{'|'.join(alternatives)})")
    return re.compile("".join(parts), re.IGNORECASE)


def scrub(text: str | None, *, limit: int = MAX_OUTSIDE_TEXT) -> str | None:
    """`text` without secrets, bearer tokens, NULs or control characters, at most `limit` long.

    Secrets are removed from the whole text before it is cut, so no part of one survives a cut.
    """
    if text is None:
        return None
    for secret in sorted(_secrets, key=len, reverse=True):
        text = _secrets[secret].sub(REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _API_KEY_SHAPE.sub(REDACTED, text)
    text = _CONTROL.sub(" ", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
