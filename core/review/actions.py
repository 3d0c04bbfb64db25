"""Set the review of an alert: the alert holds the latest decision, ``reviews`` every
one, and a confirmation goes to the notifiers as a ``review`` event (through the notify
stage, like the alert itself, so it is delivered once and retried the same way)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from core.pipeline import delivery
from core.review.states import ReviewState
from core.services import Services
from core.storage.models import Alert, Notification, Review

log = logging.getLogger(__name__)

NOTE_MAX = 2000
REVIEWER_MAX = 200


class AlertNotFound(LookupError):
    pass


@dataclass
class ReviewOutcome:
    alert_id: int
    state: ReviewState
    previous: ReviewState
    changed: bool  # a new decision (state or note) was recorded
    review_id: int | None = None
    notifications: list[int] = field(default_factory=list)  # review events to deliver


def notify_states(svc: Services) -> frozenset[str]:
    raw = svc.settings.review_notify_states
    return frozenset(ReviewState(s.strip()) for s in raw.split(",") if s.strip())


def review_event_key(review_id: int) -> str:
    """``Notification.event`` of a review decision."""
    return f"review:{review_id}"


def set_review(
    svc: Services,
    alert_id: int,
    state: ReviewState | str,
    by: str,
    note: str | None = None,
    dispatcher=None,
) -> ReviewOutcome:
    """Record a review decision. Setting the same state again with the same note changes
    nothing (a double click, a retried form). Entering a state named in
    ``review_notify_states`` (default: confirmed) opens one ``review`` notification per
    notifier, handed to ``dispatcher`` (if given) after the commit."""
    state = ReviewState(state)
    by = (by or "").strip()[:REVIEWER_MAX]
    if not by:
        raise ValueError("a review needs the reviewer's name")
    note = (note or "").strip()[:NOTE_MAX] or None
    with svc.db.session() as s:
        alert = s.get(Alert, alert_id, with_for_update=True)
        if alert is None:
            raise AlertNotFound(f"alert {alert_id} does not exist")
        previous = ReviewState(alert.review_state)
        if previous == state and (note is None or note == alert.review_note):
            return ReviewOutcome(alert_id, state, previous, changed=False)
        now = datetime.now(UTC)
        review = Review(alert_id=alert_id, state=state, previous=previous, reviewer=by, note=note)
        s.add(review)
        alert.review_state, alert.reviewed_by, alert.reviewed_at = state, by, now
        alert.review_note = note
        s.flush()
        out = ReviewOutcome(alert_id, state, previous, changed=True, review_id=review.id)
        if state != previous and state in notify_states(svc) and alert.erased_at is None:
            delivery.open_notifications(s, svc, alert_id, event=review_event_key(review.id))
            s.flush()
            out.notifications = list(
                s.scalars(
                    select(Notification.id).where(
                        Notification.alert_id == alert_id,
                        Notification.event == review_event_key(review.id),
                    )
                )
            )
    log.info("alert %s reviewed %s -> %s by %s", alert_id, previous, state, by)
    if dispatcher is not None:
        for nid in out.notifications:
            try:
                dispatcher.notify(nid)
            except Exception:  # broker down: the row stays pending, the sweeper sends it
                log.exception("review event %s of alert %s not queued yet", nid, alert_id)
    return out


def history(svc: Services, alert_id: int) -> list[dict]:
    """Every review decision on the alert, oldest first."""
    with svc.db.session() as s:
        return [
            {
                "id": r.id,
                "state": r.state,
                "previous": r.previous,
                "by": r.reviewer,
                "at": r.created_at.isoformat(),
                "note": r.note,
            }
            for r in s.scalars(
                select(Review).where(Review.alert_id == alert_id).order_by(Review.id)
            )
        ]


def review_dict(alert: Alert) -> dict:
    """``review: {state, by, at, note}`` as the CLI's and the API's JSON carry it."""
    return {
        "state": alert.review_state,
        "by": alert.reviewed_by,
        "at": alert.reviewed_at.isoformat() if alert.reviewed_at else None,
        "note": alert.review_note,
    }
