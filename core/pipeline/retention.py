"""Retention: purge old uploads with everything derived from them.

Removes, for each upload older than the cut-off: the stored file, its face chips and
crops, its face vectors in Milvus, and its rows (faces, matches, alerts and watched-file
links go with it through the foreign keys). Identities and their references are
untouched (``identity remove`` erases those).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from core.services import Services
from core.storage.models import Face, Upload


@dataclass
class PurgeResult:
    uploads: int
    faces: int
    vectors: int


def purge_uploads(svc: Services, older_than_days: float, dry_run: bool = False) -> PurgeResult:
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    with svc.db.session() as s:
        ups = list(
            s.execute(
                select(Upload.id, Upload.path, Upload.sha256).where(Upload.created_at < cutoff)
            )
        )
        ids = [u.id for u in ups]
        faces = (
            list(s.execute(select(Face.id, Face.face_backend).where(Face.upload_id.in_(ids))))
            if ids
            else []
        )
        # Stored files are content-addressed: keep a file another (newer) upload still uses.
        shared = set(s.scalars(select(Upload.path).where(Upload.created_at >= cutoff)))
        if dry_run:
            return PurgeResult(len(ids), len(faces), len(faces))
        by_backend: dict[str, list[int]] = {}
        for fid, backend in faces:
            by_backend.setdefault(backend, []).append(fid)
        for backend, fids in by_backend.items():
            svc.vectors.delete_faces(backend, fids)
        if ids:
            s.execute(delete(Upload).where(Upload.id.in_(ids)))
    for u in ups:
        if u.path not in shared and u.path.startswith("uploads/"):
            svc.files.remove(u.path)
        svc.files.remove_tree(f"crops/{u.id}")
    return PurgeResult(len(ids), len(faces), len(faces))
