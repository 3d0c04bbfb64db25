"""Submit an upload: store the bytes once (content-addressed) and create its status row."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from core.errors import Rejected
from core.intake import read_bytes
from core.services import Services
from core.storage.models import Upload, UploadStatus


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
    try:
        data = read_bytes(path, svc.limits)
    except Rejected as rej:
        ident = f"unread:{Path(path).resolve()}:{rej.code}".encode("utf-8", "surrogateescape")
        key = hashlib.sha256(ident).hexdigest()
        return _insert(svc, key, str(path), str(path), source, UploadStatus.rejected, str(rej))
    return submit_bytes(svc, data, str(path), source)


def _insert(
    svc: Services, sha: str, name: str, rel: str, source: str, status: str, reason: str | None
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
