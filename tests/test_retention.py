"""Purging old uploads removes their files, crops, vectors and rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from core.demo.dataset import load_references
from core.pipeline.identities import register_identity
from core.pipeline.retention import purge_uploads
from core.pipeline.sources.scan import scan
from core.storage.models import Alert, Face, Match, Upload


def _n(svc, model) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_purge_old_uploads(svc, demo_set):
    register_identity(svc, "Eileen Collins", load_references(demo_set)["Eileen Collins"])
    summary = scan(svc, [demo_set / "uploads"])
    assert _n(svc, Match) == 7
    old = summary.upload_ids[:10]
    with svc.db.session() as s:
        s.execute(
            update(Upload)
            .where(Upload.id.in_(old))
            .values(created_at=datetime.now(UTC) - timedelta(days=40))
        )
        old_faces = list(s.scalars(select(Face.id).where(Face.upload_id.in_(old))))
        paths = list(s.scalars(select(Upload.path).where(Upload.id.in_(old))))
    backend = svc.face_backend.name
    before = svc.vectors.count(svc.vectors.faces_name(backend))

    assert purge_uploads(svc, 30, dry_run=True).uploads == 10
    assert _n(svc, Upload) == 20
    res = purge_uploads(svc, 30)
    assert (res.uploads, res.faces) == (10, len(old_faces))
    assert _n(svc, Upload) == 10
    with svc.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Face).where(Face.id.in_(old_faces))) == 0
        assert (
            s.scalar(select(func.count()).select_from(Alert).where(Alert.upload_id.in_(old))) == 0
        )
    assert svc.vectors.count(svc.vectors.faces_name(backend)) == before - len(old_faces)
    assert not any(svc.files.abs(p).exists() for p in paths)
    assert not any(svc.files.abs(f"crops/{u}").exists() for u in old)
