"""Storing an upload by what its first bytes are, and a video without holding it.

Which files are submitted is decided in one place, ``sources.admit.admit``; here the
first bytes only choose the path an admitted upload takes (``sniff_media``: a video
is streamed into the store, anything else goes the image way). Content only, never
the file name.

``store_video`` streams a video into the upload store under ``max_video_bytes``,
hashing as it goes: a video is never read into memory whole.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Literal

from core.errors import Rejected
from core.settings import Settings
from core.video.intake import SNIFF_BYTES, sniff_container

MediaKind = Literal["image", "video"]

_CHUNK = 1 << 20
# Stored video names end like their container (the bytes decide, never the client's name).
_VIDEO_EXT = {"mp4": ".mp4", "mov": ".mov", "matroska": ".mkv", "webm": ".webm", "avi": ".avi"}

__all__ = ["SNIFF_BYTES", "MediaKind", "max_bytes_for", "store_video"]


def max_bytes_for(settings: Settings, kind: MediaKind | None) -> int:
    """The size limit of an upload of this kind (what is neither counts as an image)."""
    return settings.max_video_bytes if kind == "video" else settings.max_upload_bytes


def video_suffix(head: bytes) -> str:
    return _VIDEO_EXT.get(sniff_container(head[:SNIFF_BYTES]) or "", ".video")


def store_video(
    upload_dir: Path, fh: BinaryIO, max_bytes: int, head: bytes = b""
) -> tuple[str, str, int]:
    """Copy ``head`` + the rest of ``fh`` into ``upload_dir`` as ``<sha[:2]>/<sha><ext>``
    (content-addressed, written then renamed). Returns ``(relative name under
    upload_dir, sha256, size)``. More than ``max_bytes``: ``Rejected("too_large")``
    after reading at most ``max_bytes + 1`` bytes, and nothing is left behind."""
    upload_dir = Path(upload_dir)
    upload_dir.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    total = 0
    sniffed = b""  # the first bytes written, which name the container
    fd, tmp = tempfile.mkstemp(dir=upload_dir, prefix=".tmp-video-")
    try:
        with os.fdopen(fd, "wb") as out:
            first = head
            while True:
                chunk = first or fh.read(min(_CHUNK, max_bytes + 1 - total))
                first = b""
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise Rejected("too_large", f"over the video limit of {max_bytes} bytes")
                sha.update(chunk)
                out.write(chunk)
                if len(sniffed) < SNIFF_BYTES:
                    sniffed += chunk[: SNIFF_BYTES - len(sniffed)]
        digest = sha.hexdigest()
        rel = f"{digest[:2]}/{digest}{video_suffix(sniffed)}"
        final = upload_dir / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # the same bytes were stored before
            os.unlink(tmp)
        else:
            os.replace(tmp, final)
        return rel, digest, total
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
