"""Recovery: nothing submitted may stay half-done.

Messages can be lost outside the pipeline's control: Redis restarted without
persistence, a process crashing between creating an upload and enqueueing it, a
worker dying after its visibility timeout was raised. The sweeper finds uploads
that are not terminal and have not moved for a while, and dispatches them again
from the start: every stage is idempotent, so already-finished stages are skipped
in milliseconds. It also retries undelivered notifications and finishes erasures
that failed or whose process died.

An upload that keeps coming back (for example one that kills its worker each time)
is failed after ``max_attempts`` stage runs instead of looping forever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from core.pipeline.dispatch import Dispatcher
from core.pipeline.erasure import resume_erasures
from core.pipeline.status import mark_failed
from core.pipeline.verdict import notify_pending
from core.services import Services
from core.storage.models import Upload, UploadStatus

log = logging.getLogger(__name__)

NON_TERMINAL = (
    UploadStatus.received,
    UploadStatus.cropped,
    UploadStatus.embedded,
    UploadStatus.indexed,
)
# Four stages per upload; a few full retries on top before giving up.
MAX_STAGE_RUNS = 16


def note_attempt(svc: Services, upload_id: int, max_runs: int = MAX_STAGE_RUNS) -> bool:
    """Count one stage run of an upload; False (and the upload failed) past the limit."""
    with svc.db.session() as s:
        s.execute(update(Upload).where(Upload.id == upload_id).values(attempts=Upload.attempts + 1))
        n = s.scalar(select(Upload.attempts).where(Upload.id == upload_id))
    if n is not None and n > max_runs:
        mark_failed(svc, upload_id, f"gave up after {n - 1} stage runs (a worker kept dying?)")
        return False
    return True


@dataclass
class SweepResult:
    requeued: list[int]
    notified: int
    erasures_finished: list[int] = field(default_factory=list)


def sweep(
    svc: Services,
    dispatcher: Dispatcher,
    older_than_s: float = 120.0,
    limit: int = 1000,
    backlog: int = 0,
) -> SweepResult:
    """Re-dispatch uploads idle for ``older_than_s``. With messages still queued
    (``backlog`` > 0) an idle upload is more likely waiting its turn than lost, so the
    wait is ten times longer: re-dispatching a backlog would only double it."""
    wait = older_than_s * (10 if backlog > 0 else 1)
    cutoff = datetime.now(UTC) - timedelta(seconds=wait)
    with svc.db.session() as s:
        stuck = list(
            s.scalars(
                select(Upload.id)
                .where(Upload.status.in_(NON_TERMINAL), Upload.updated_at < cutoff)
                .order_by(Upload.id)
                .limit(limit)
            )
        )
        if stuck:  # touch them so the next sweep waits a full period again
            s.execute(
                update(Upload).where(Upload.id.in_(stuck)).values(updated_at=datetime.now(UTC))
            )
    for uid in stuck:
        log.warning("re-dispatching upload %s (not terminal for %.0f s)", uid, wait)
        dispatcher.upload(uid)
    return SweepResult(stuck, notify_pending(svc), resume_erasures(svc))
