"""Retention: purge old uploads with everything derived from them.

Removes, for each upload older than the cut-off: the stored file, its face chips and
crops, its face vectors in Milvus, and its rows (faces, matches, alerts, their
notifications and delivery log go with it through the foreign keys; watched-file rows
keep their path and lose the link). Identities and their references are untouched
(``identity remove`` erases those).

A dry run counts the same plan the real run executes, so its numbers are what would go.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select

from core.services import Services
from core.storage.models import Alert, Delivery, Face, Match, Notification, Upload


@dataclass
class PurgeResult:
    uploads: int
    faces: int
    vectors: int
    matches: int = 0
    alerts: int = 0
    notifications: int = 0
    deliveries: int = 0
    files: int = 0  # stored uploads, face chips and crops
    bytes: int = 0  # their size on disk

    def as_dict(self) -> dict:
        return asdict(self)


def _count(s, model, *where) -> int:
    return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _files(svc: Services, upload_paths: list[str], upload_ids: list[int]) -> list[Path]:
    """Files the purge removes: stored uploads no newer upload shares, and crops."""
    out = [svc.files.abs(p) for p in upload_paths]
    for uid in upload_ids:
        crops = svc.files.abs(f"crops/{uid}")
        if crops.is_dir():
            out.extend(f for f in crops.rglob("*") if f.is_file())
    return [f for f in out if f.is_file()]


def purge_uploads(svc: Services, older_than_days: float, dry_run: bool = False) -> PurgeResult:
    if older_than_days < 0:
        raise ValueError("older_than_days must be >= 0")
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
        face_ids = [f.id for f in faces]
        alert_ids = list(s.scalars(select(Alert.id).where(Alert.upload_id.in_(ids))))
        # Stored files are content-addressed: keep a file another (newer) upload still uses.
        shared = set(s.scalars(select(Upload.path).where(Upload.created_at >= cutoff)))
        owned = sorted(
            {u.path for u in ups if u.path not in shared and u.path.startswith("uploads/")}
        )
        files = _files(svc, owned, ids)
        res = PurgeResult(
            uploads=len(ids),
            faces=len(faces),
            vectors=len(faces),  # one vector per face, deleted by face id
            matches=_count(s, Match, Match.face_id.in_(face_ids)),
            alerts=len(alert_ids),
            notifications=_count(s, Notification, Notification.alert_id.in_(alert_ids)),
            deliveries=_count(s, Delivery, Delivery.alert_id.in_(alert_ids)),
            files=len(files),
            bytes=sum(f.stat().st_size for f in files),
        )
        if dry_run:
            return res
        by_backend: dict[str, list[int]] = {}
        for fid, backend in faces:
            by_backend.setdefault(backend, []).append(fid)
        for backend, fids in by_backend.items():
            svc.vectors.delete_faces(backend, fids)
        if ids:
            s.execute(delete(Upload).where(Upload.id.in_(ids)))
    for rel in owned:
        svc.files.remove(rel)
    for uid in ids:
        svc.files.remove_tree(f"crops/{uid}")
    return res
