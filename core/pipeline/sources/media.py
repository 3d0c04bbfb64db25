"""What an upload is, from its first bytes, and storing a video without holding it.

``media_decision(head)`` is the one rule every source follows (the submit layer here;
a folder scanner may call it to skip files before reading them whole): an image or a
video is submitted, anything else is skipped with a reason (when a file is named
explicitly it is submitted all the same, and the image intake refuses it with its
code). Content only, never the file name.

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
from core.video.intake import SNIFF_BYTES, sniff_container, sniff_media

MediaKind = Literal["image", "video"]

_CHUNK = 1 << 20
# Stored video names end like their container (the bytes decide, never the client's name).
_VIDEO_EXT = {"mp4": ".mp4", "mov": ".mov", "matroska": ".mkv", "webm": ".webm", "avi": ".avi"}

__all__ = ["SNIFF_BYTES", "MediaKind", "max_bytes_for", "media_decision", "store_video"]


def media_decision(head: bytes) -> tuple[MediaKind | None, str | None]:
    """``(kind, None)`` to submit ``head``'s file as an image or a video, or ``(None,
    reason)`` to skip it. ``head``: the first ``SNIFF_BYTES`` (or all, if shorter).
    A video container outside the allow-list (FLV, MPEG-TS...) is still a video: the
    video intake rejects it as ``unsupported_format``, which says more than a skip."""
    kind = sniff_media(head[:SNIFF_BYTES])
    if kind is not None:
        return kind, None
    if not head:
        return None, "empty file"
    return None, "neither an image nor a video (by its first bytes)"


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
