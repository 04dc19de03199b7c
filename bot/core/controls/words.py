"""Banned words and phrases: matched case- and accent-insensitively, as whole words.

`Café`, `CAFE` and `cafe` are one word here (casefold, then NFKD with the combining marks
dropped, and invisible format characters too), so an accent, a capital, a fullwidth letter or
a zero-width space does not get a banned word past the check; whole-word matching keeps
`class` from being refused for containing `ass`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable


def normalise(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    # Combining marks (accents) and format characters (zero-width space/joiner, soft hyphen,
    # word joiner: invisible, so `b\u200bad` reads as `bad` to everyone but a plain search).
    stripped = "".join(
        c for c in decomposed if not unicodedata.combining(c) and unicodedata.category(c) != "Cf"
    )
    return " ".join(stripped.split())


def first_banned(text: str, phrases: Iterable[str]) -> str | None:
    """The first banned phrase found in `text` (for the log; members are not told which)."""
    haystack = normalise(text)
    for phrase in phrases:
        needle = normalise(phrase)
        if needle and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack):
            return phrase
    return None
