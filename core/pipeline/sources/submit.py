"""Submit an upload: store the bytes once (content-addressed) and create its status row.

What the bytes are decides the path (``core.video.intake.sniff_media``): a video is
stored streaming under ``max_video_bytes`` and marked ``media_kind="video"``; anything
else goes the image way under ``max_upload_bytes`` (and the image intake refuses what
is not an image).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select

from core.errors import Rejected
from core.intake import read_bytes
from core.pipeline.sources.media import SNIFF_BYTES, store_video
from core.services import Services
from core.storage.models import Upload, UploadStatus
from core.video.intake import sniff_media


@dataclass(frozen=True)
class Submission:
    upload_id: int
    created: bool  # False: the same bytes were submitted before (de-duplicated)
    status: str


def _sniff_format(data: bytes) -> str | None:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format
    except Exception:  # the crop stage gives the real verdict; this only picks an extension
        return None


def storable(text: str) -> str:
    """Text that any database accepts: a file name that is not valid UTF-8 reaches
    Python as lone surrogates, which SQLite and PostgreSQL refuse; keep it readable
    with backslash escapes instead of failing the upload."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def submit_bytes(svc: Services, data: bytes, name: str, source: str = "cli") -> Submission:
    if sniff_media(data[:SNIFF_BYTES]) == "video":
        import io

        try:
            return submit_video_stream(svc, io.BytesIO(data), name, source)
        except Rejected as rej:  # over the video limit: recorded, never stored
            sha = hashlib.sha256(data).hexdigest()
            return _insert(svc, sha, name, name, source, UploadStatus.rejected, str(rej), "video")
    sha = hashlib.sha256(data).hexdigest()
    with svc.db.session() as s:
        existing = s.scalar(select(Upload).where(Upload.sha256 == sha))
        if existing is not None:
            return Submission(existing.id, False, existing.status)
    rel = svc.files.put_upload(sha, data, _sniff_format(data))
    return _insert(svc, sha, name, rel, source, UploadStatus.received, None)


def submit_path(svc: Services, path: Path, source: str = "cli") -> Submission:
    """Submit one file. Files that cannot even be read (too big, not a regular file)
    still get a status row, rejected with the reason, so nothing disappears."""
    kind = sniff_media(_peek(Path(path)))
    try:
        if kind == "video":
            return _submit_video_path(svc, Path(path), source)
        data = read_bytes(path, svc.limits)
    except Rejected as rej:
        return _unread(svc, path, source, rej, kind or "image")
    return submit_bytes(svc, data, str(path), source)


def submit_video_stream(
    svc: Services, fh: BinaryIO, name: str, source: str = "cli", head: bytes = b""
) -> Submission:
    """Store a video from ``head`` + the rest of ``fh`` (streamed, hashed as it goes,
    never whole in memory) and give it a status row. ``Rejected("too_large")`` past
    ``max_video_bytes`` (nothing is stored then): the caller decides what that means
    (a rejected row for a file, 413 for the API)."""
    rel, sha, _ = store_video(svc.files.abs("uploads"), fh, svc.settings.max_video_bytes, head)
    with svc.db.session() as s:
        existing = s.scalar(select(Upload).where(Upload.sha256 == sha))
        if existing is not None:
            return Submission(existing.id, False, existing.status)
    return _insert(svc, sha, name, f"uploads/{rel}", source, UploadStatus.received, None, "video")


def _submit_video_path(svc: Services, path: Path, source: str) -> Submission:
    from core.video.intake import VideoLimits, open_source

    limits = VideoLimits(max_bytes=svc.settings.max_video_bytes)
    with open_source(path, limits) as fh:  # regular file, size checked before reading
        return submit_video_stream(svc, fh, str(path), source)


def _peek(path: Path) -> bytes:
    """The first bytes of a regular file, to tell an image from a video; b"" when it
    cannot be read (the image path then rejects it with the precise reason)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, SNIFF_BYTES)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _unread(
    svc: Services, path: Path, source: str, rej: Rejected, media_kind: str = "image"
) -> Submission:
    ident = f"unread:{Path(path).resolve()}:{rej.code}".encode("utf-8", "surrogateescape")
    key = hashlib.sha256(ident).hexdigest()
    return _insert(
        svc, key, str(path), str(path), source, UploadStatus.rejected, str(rej), media_kind
    )


def _insert(
    svc: Services,
    sha: str,
    name: str,
    rel: str,
    source: str,
    status: str,
    reason: str | None,
    media_kind: str = "image",
) -> Submission:
    from sqlalchemy.exc import IntegrityError

    try:
        with svc.db.session() as s:
            up = Upload(
                sha256=sha,
                original_name=storable(name)[:2000],
                path=storable(rel),
                source=source,
                status=status,
                reason=None if reason is None else storable(reason),
                media_kind=media_kind,
            )
            s.add(up)
            s.flush()
            return Submission(up.id, True, up.status)
    except IntegrityError:
        # Another process submitted the same bytes at the same moment.
        with svc.db.session() as s:
            up = s.scalar(select(Upload).where(Upload.sha256 == sha))
            assert up is not None
            return Submission(up.id, False, up.status)
