"""What an image file really is, read from its first bytes.

A file's name and the type a sender declares are claims; Discord even reports the type it
guessed from the name, so a ZIP attached as `cat.png` arrives as `image/png`. Every front end
(the CLI's local files, Discord attachments) goes through `JobService.check_files`, which
checks the type found here, so no path uploads bytes the API would refuse (or worse, store).
"""

from __future__ import annotations

import stat
from pathlib import Path

from bot.core.catalog import UPLOAD_MAX_BYTES, MiB
from bot.core.request import Problem, RequestInvalid

#: Enough of the file to recognise every format the catalog accepts.
SNIFF_BYTES = 16


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of an image from its magic bytes, or None if it is not one we know."""
    head = data[:SNIFF_BYTES]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def read_local_image(path: Path, shown: str, *, limit: int = UPLOAD_MAX_BYTES) -> bytes:
    """A local image's bytes, refusing before the read what could not be uploaded anyway.

    The size is checked from `stat` first (a 5 GB file is refused without reading it), then
    the read itself is capped (a file that grows, or a `/proc` file that reports size 0).
    Anything but a regular file (a FIFO would block forever) is refused.
    """

    def refuse(why: str) -> RequestInvalid:
        return RequestInvalid([Problem("image", f"{shown}: {why}")])

    try:
        info = path.stat()
    except OSError:
        raise refuse("no such file (give a path or an http(s) URL)") from None
    if not stat.S_ISREG(info.st_mode):
        raise refuse("not a regular file (a folder, a FIFO or a device); give an image file")
    if info.st_size > limit:
        raise refuse(_too_large(info.st_size, limit))
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except PermissionError:
        raise refuse("permission denied (the file cannot be read)") from None
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not data:
        raise refuse("is empty (or not a real file, as under /proc)")
    if len(data) > limit:
        raise refuse(_too_large(len(data), limit))
    return data


def _too_large(size: int, limit: int) -> str:
    return f"too large ({size / MiB:.1f} MB; the limit is {limit / MiB:.0f} MB)"
