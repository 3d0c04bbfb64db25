"""Stage notify: deliver one alert through one notifier, exactly once per pair.

An alert is created with one ``Notification`` row per configured notifier (pending).
The notify stage takes one such row: it claims it (so two workers never send it at the
same moment), builds the small JSON event (the alert, or a review decision on it,
``core.review.events``) and hands it to the notifier. Delivered: the
row is marked and, once every notifier took the alert, so is the alert
(``notified_at``). A receiver that is away: the row stays pending with the error and
the stage raises, so the dispatcher tries again later (Celery's backoff on the notify
queue; the sweeper after that). A receiver that refuses for good (4xx): the row is
``failed``. Classify only creates the rows and never waits on a receiver.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core.alerts.notify import AlertEvent, DeliveryFailed, notifier_names
from core.review.events import review_event
from core.services import Services
from core.storage.inserts import insert_missing
from core.storage.models import Alert, Face, Notification, NotificationStatus, Upload

log = logging.getLogger(__name__)

# A claim older than this belongs to a worker that died while delivering.
CLAIM_LEASE = timedelta(minutes=10)

ALERT = "alert"  # Notification.event of the alert itself; reviews: core.review.events


def open_notifications(s: Session, svc: Services, alert_id: int, event: str = ALERT) -> None:
    """One pending row per configured notifier, in the transaction that adds the alert
    (or, for ``event="review:<id>"``, the review decision)."""
    for name in notifier_names(svc.settings):
        # Unique (alert, notifier, event): opened once even if two runs get here.
        insert_missing(s, Notification, alert_id=alert_id, notifier=name, attempts=0, event=event)


def pending(svc: Services, *where) -> list[int]:
    """Ids of pending notifications of the alerts selected by ``where``."""
    with svc.db.session() as s:
        return list(
            s.scalars(
                select(Notification.id)
                .join(Alert, Alert.id == Notification.alert_id)
                .where(Notification.status == NotificationStatus.pending, *where)
                .order_by(Notification.id)
            )
        )


def _claim(svc: Services, notification_id: int) -> bool:
    """Atomically take one pending notification (compare-and-set on the row)."""
    now = datetime.now(UTC)
    with svc.db.session() as s:
        res = s.execute(
            update(Notification)
            .where(
                Notification.id == notification_id,
                Notification.status == NotificationStatus.pending,
                or_(
                    Notification.claimed_at.is_(None),
                    Notification.claimed_at < now - CLAIM_LEASE,
                ),
            )
            .values(claimed_at=now)
        )
        return res.rowcount == 1


def _event(s: Session, alert_id: int) -> AlertEvent | None:
    row = s.execute(
        select(Alert, Face, Upload)
        .join(Face, Alert.face_id == Face.id)
        .join(Upload, Alert.upload_id == Upload.id)
        .where(Alert.id == alert_id)
    ).first()
    if row is None:
        return None
    a, f, u = row
    if a.erased_at is not None:
        return None  # the person was erased before delivery: send nothing in their name
    return AlertEvent(
        alert_id=a.id,
        upload_id=u.id,
        face_id=f.id,
        identity_id=a.identity_id,
        identity_name=a.identity_name,
        similarity=round(a.similarity, 4),
        fake_score=round(a.fake_score, 4),
        decision=a.decision,
        detector=a.detector,
        upload_name=u.original_name,
        box=list(f.box),
        created_at=a.created_at.isoformat(),
        frame_time_s=a.frame_time_s,
        track_id=a.track_id,
    )


def deliver(svc: Services, notification_id: int) -> list[int]:
    """Deliver one (alert, notifier). Idempotent: a delivered, failed or claimed row is
    left alone. Raises when the receiver is away, after recording it, so the caller
    tries again later. Nothing comes after delivery."""
    if not _claim(svc, notification_id):
        return []  # done already, refused for good, or another worker is sending it
    with svc.db.session() as s:
        n = s.get(Notification, notification_id)
        event = _event(s, n.alert_id) if n.event == ALERT else review_event(s, n)
        name = n.notifier
    if event is None:
        _finish(svc, notification_id, NotificationStatus.failed, "alert erased before delivery")
        return []
    try:
        svc.notifier(name).notify(event)
    except DeliveryFailed as exc:
        if not exc.retryable:
            log.error("notification %s (%s) refused for good: %s", notification_id, name, exc)
            _finish(svc, notification_id, NotificationStatus.failed, str(exc))
            return []
        note_failure(svc, notification_id, str(exc))
        raise
    except Exception as exc:
        note_failure(svc, notification_id, f"{type(exc).__name__}: {exc}")
        raise
    _finish(svc, notification_id, NotificationStatus.delivered, None)
    return []


def _finish(svc: Services, notification_id: int, status: str, error: str | None) -> None:
    now = datetime.now(UTC)
    with svc.db.session() as s:
        n = s.get(Notification, notification_id)
        n.status, n.error, n.claimed_at = status, error, None
        n.attempts += 1
        if status == NotificationStatus.delivered:
            n.delivered_at = now
            s.flush()
            undelivered = s.scalar(
                select(Notification.id).where(
                    Notification.alert_id == n.alert_id,
                    Notification.event == ALERT,
                    Notification.status != NotificationStatus.delivered,
                )
            )
            if undelivered is None:
                s.execute(update(Alert).where(Alert.id == n.alert_id).values(notified_at=now))


def note_failure(svc: Services, notification_id: int, error: str) -> None:
    """A delivery run failed: keep the error, release the claim; the row stays pending
    (retried by the dispatcher, then by the sweeper)."""
    log.warning("notification %s not delivered yet: %s", notification_id, error)
    with svc.db.session() as s:
        n = s.get(Notification, notification_id)
        if n is None or n.status != NotificationStatus.pending:
            return
        n.error, n.claimed_at = error[:4000], None
        n.attempts += 1
        n.updated_at = datetime.now(UTC)


def stuck(svc: Services, idle_s: float, limit: int = 1000, skip: Collection[int] = ()) -> list[int]:
    """Pending notifications no run has touched for ``idle_s`` (lost messages, retries
    given up), but those in ``skip`` (their message is still on its way), touched now so
    the next sweep waits a full period again."""
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=idle_s)
    with svc.db.session() as s:
        ids = list(
            s.scalars(
                select(Notification.id)
                .where(
                    Notification.status == NotificationStatus.pending,
                    Notification.updated_at < cutoff,
                    or_(
                        Notification.claimed_at.is_(None),
                        Notification.claimed_at < now - CLAIM_LEASE,
                    ),
                )
                .order_by(Notification.id)
            )
        )
        ids = [i for i in ids if i not in skip][:limit]
        if ids:
            s.execute(update(Notification).where(Notification.id.in_(ids)).values(updated_at=now))
    return ids
