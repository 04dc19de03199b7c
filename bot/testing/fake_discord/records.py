"""What the fake remembers about each HTTP request, and the shapes its handlers pass around."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class RecordedRequest:
    """One HTTP request the fake received (REST or CDN).

    ``path`` is relative to the API base for REST calls (``/channels/1/messages``) and the raw
    URL path for CDN downloads (``/attachments/...``). ``json`` is the parsed JSON body, or the
    ``payload_json`` part for multipart bodies. ``files`` lists ``(filename, size, content_type)``
    of uploaded files (bytes in ``file_data``). ``headers`` exclude ``Authorization``.
    ``status``/``response`` are what the fake answered; ``route`` is the matched route template
    (``None`` if unhandled).
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[tuple[str, int, str]]
    headers: dict[str, str]
    at: float
    kind: str = "api"  # "api" or "cdn"
    raw_path: str = ""
    route: str | None = None
    status: int = 0
    response: Any = None
    injected: bool = False  # answered by a fail_next() rule
    error: str | None = None  # traceback if the fake itself crashed handling this request
    file_data: list[bytes] = field(default_factory=list, repr=False)


@dataclass
class FaultRule:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: int
    message: str
    remaining: int
    retry_after: float
    errors: dict[str, Any] | None
    is_global: bool
    #: Handle the request first (the message exists!), then answer with the fault.
    after_processing: bool = False
    #: Close the connection instead of answering.
    drop: bool = False
    #: Hold the answer this long (seconds) before giving it.
    delay: float = 0.0


@dataclass
class Upload:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Ctx:
    request: web.Request
    params: dict[str, str]
    json: Any
    uploads: list[Upload]
    record: RecordedRequest
