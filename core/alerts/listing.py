"""Alert rows for the CLI, the report and the API.

A video alert names its moment and track: ``frame_time_s`` (seconds from the start of
the video; the face of the row was seen then) and ``track_id``; both are null for an
image, and ``media_kind`` says which it is.
"""

from __future__ import annotations

from sqlalchemy import func, select

from core.names import name_key
from core.review.actions import review_dict
from core.services import Services
from core.storage.models import Alert, Face, Identity, Upload


def _where(s, identity: str | None, review_state: str | None, upload_id: int | None) -> list | None:
    """The filters as SQL conditions; None when ``identity`` names nobody."""
    where = []
    if review_state is not None:
        where.append(Alert.review_state == review_state)
    if upload_id is not None:
        where.append(Alert.upload_id == upload_id)
    if identity is not None:
        ident = s.scalar(select(Identity.id).where(Identity.name_key == name_key(identity)))
        if ident is None:
            return None
        where.append(Alert.identity_id == ident)
    return where


def list_alerts(
    svc: Services,
    identity: str | None = None,
    review_state: str | None = None,
    *,
    upload_id: int | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict]:
    """Alert rows, oldest first; ``review_state``: only alerts in that review state;
    ``upload_id``: only that upload's. ``limit``/``offset`` page in the query (the
    database reads one page, never every alert)."""
    with svc.db.session() as s:
        where = _where(s, identity, review_state, upload_id)
        if where is None:
            return []
        q = (
            select(Alert, Face, Upload)
            .join(Face, Alert.face_id == Face.id)
            .join(Upload, Alert.upload_id == Upload.id)
            .where(*where)
            .order_by(Alert.id)
            .offset(offset or None)
            .limit(limit)
        )
        return [
            {
                "id": a.id,
                "upload_id": u.id,
                "upload": u.original_name,
                "face_id": f.id,
                "box": [round(v, 1) for v in f.box],
                "identity": a.identity_name,
                "identity_id": a.identity_id,
                "similarity": round(a.similarity, 4),
                "fake_score": round(a.fake_score, 4),
                "decision": a.decision,
                "detector": a.detector,
                "quality": f.quality,
                "crop_path": f.crop_path,
                "reference_id": a.reference_id,
                "erased": a.erased_at is not None,
                "notified": a.notified_at is not None,
                "created_at": a.created_at.isoformat(),
                "review": review_dict(a),
                "media_kind": u.media_kind,
                "frame_time_s": None if a.frame_time_s is None else round(a.frame_time_s, 3),
                "track_id": a.track_id,
            }
            for a, f, u in s.execute(q)
        ]


def count_alerts(
    svc: Services,
    identity: str | None = None,
    review_state: str | None = None,
    *,
    upload_id: int | None = None,
) -> int:
    """How many alerts ``list_alerts`` has with these filters (counted in the database)."""
    with svc.db.session() as s:
        where = _where(s, identity, review_state, upload_id)
        if where is None:
            return 0
        return s.scalar(select(func.count()).select_from(Alert).where(*where)) or 0
