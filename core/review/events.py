"""The ``review`` event a notifier receives when a reviewer confirms an alert."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.alerts.notify import ReviewEvent
from core.storage.models import Alert, Face, Notification, Review, Upload


def review_event(s: Session, n: Notification) -> ReviewEvent | None:
    """The event of a ``review:<id>`` notification; None when there is nothing to send
    any more (the alert's person was erased, or the review row is gone)."""
    try:
        review_id = int(n.event.split(":", 1)[1])
    except (IndexError, ValueError):
        return None
    row = s.execute(
        select(Review, Alert, Face, Upload)
        .join(Alert, Alert.id == Review.alert_id)
        .join(Face, Alert.face_id == Face.id)
        .join(Upload, Alert.upload_id == Upload.id)
        .where(Review.id == review_id, Alert.id == n.alert_id)
    ).first()
    if row is None:
        return None
    r, a, f, u = row
    if a.erased_at is not None:
        return None  # never send anything in the name of an erased person
    return ReviewEvent(
        review_id=r.id,
        alert_id=a.id,
        upload_id=u.id,
        face_id=f.id,
        identity_id=a.identity_id,
        identity_name=a.identity_name,
        state=r.state,
        previous=r.previous,
        reviewer=r.reviewer,
        note=r.note,
        reviewed_at=r.created_at.isoformat(),
        similarity=round(a.similarity, 4),
        fake_score=round(a.fake_score, 4),
        upload_name=u.original_name,
        box=list(f.box),
        alert_created_at=a.created_at.isoformat(),
    )
