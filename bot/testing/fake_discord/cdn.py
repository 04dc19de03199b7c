"""The fake CDN: attachment bytes behind signed-looking URLs, served over HTTP."""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from bot.testing.fake_discord.faults import Faults
from bot.testing.fake_discord.records import RecordedRequest


class Cdn(Faults):
    """Stores uploaded and test-supplied files; `GET /attachments/...` downloads them."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._cdn: dict[str, tuple[bytes, str]] = {}

    def _cdn_store(
        self,
        path: str,
        attachment_id: int,
        filename: str,
        data: bytes,
        content_type: str,
        *,
        description: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self._cdn[path] = (data, content_type)
        now = int(time.time())
        signed = f"?ex={now + 86400:x}&is={now:x}&hm={secrets.token_hex(32)}&"
        att: dict[str, Any] = {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": f"{self.cdn_base}{path}{signed}",
            "proxy_url": f"{self.cdn_base}{path}{signed}",
            "content_type": content_type,
            "flags": 0,
        }
        if description is not None:
            att["description"] = description
        if extra:
            att.update(extra)
        return att

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str,
        *,
        channel_id: int | None = None,
        description: str | None = None,
        width: int | None = None,
        height: int | None = None,
        duration_secs: float | None = None,
    ) -> dict[str, Any]:
        """Store bytes on the fake CDN and return a Discord attachment object for them.

        Without ``channel_id`` the URL is an ``/ephemeral-attachments/...`` URL, like the ones
        Discord gives slash-command attachment options.
        """
        aid = self.next_id()
        if channel_id is None:
            path = f"/ephemeral-attachments/{self.application_id}/{aid}/{filename}"
        else:
            path = f"/attachments/{channel_id}/{aid}/{filename}"
        extra: dict[str, Any] = {}
        if width is not None:
            extra["width"] = width
        if height is not None:
            extra["height"] = height
        if duration_secs is not None:
            extra["duration_secs"] = duration_secs
        if channel_id is None:
            extra["ephemeral"] = True
        return self._cdn_store(
            path, aid, filename, data, content_type, description=description, extra=extra
        )

    def attachment_bytes(self, url_or_attachment: str | dict[str, Any]) -> bytes:
        """The stored bytes behind an attachment URL (or attachment dict)."""
        url = url_or_attachment["url"] if isinstance(url_or_attachment, dict) else url_or_attachment
        path = url.removeprefix(self.cdn_base).split("?", 1)[0]
        return self._cdn[path][0]

    async def _cdn_handler(self, request: web.Request) -> web.StreamResponse:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            raw_path=request.path,
            query=dict(request.query),
            json=None,
            files=[],
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            at=time.time(),
            kind="cdn",
            route="GET cdn",
        )
        rule = self._match_fault(request.method, request.path)
        if request.path in self._cdn:
            data, ctype = self._cdn[request.path]
            resp: web.StreamResponse = web.Response(body=data, headers={"Content-Type": ctype})
        else:
            resp = web.Response(status=404, text="Not Found")
        if rule is not None:
            record.injected = True
            self._record(record)  # seen now, even if the answer is held
            resp = await self._apply_fault(rule, request, resp)
            record.status = resp.status
            return resp
        record.status = resp.status
        self._record(record)
        return resp
