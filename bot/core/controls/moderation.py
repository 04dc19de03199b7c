"""The API's own moderation refusals, said in plain words.

APIMart passes the upstream model's refusal through as the task's error text, in whatever
language and jargon the provider uses ("content_policy_violation", "内容审核未通过",
"safety system"). A member reading that should learn the one thing that matters: the video
was refused for its content, nothing was charged, and rewording may help. The provider's own
words are kept after that sentence (they may say what was wrong).
"""

from __future__ import annotations

import re

#: Words providers use when their moderation refuses a prompt or an image.
_MARKERS = re.compile(
    r"moderat|content.?polic|safety|sensitive|nsfw|violat|prohibited|inappropriate|"
    r"not allowed|审核|敏感|违规|安全|검열|정책|유해",
    re.IGNORECASE,
)

PLAIN = (
    "The video service refused this request because of its content moderation "
    "(the prompt or an image). Nothing was charged; rewording the prompt may help."
)


def is_moderation(message: str | None) -> bool:
    return bool(message) and _MARKERS.search(message or "") is not None


def plain_reason(message: str | None) -> str | None:
    """The moderation sentence followed by the API's words, or None for other failures."""
    if not is_moderation(message):
        return None
    return f"{PLAIN}\n-# APIMart said: {message}"
