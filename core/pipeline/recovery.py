"""Recovery: nothing submitted may stay half-done.

Messages can be lost outside the pipeline's control: Redis restarted without
persistence, a process crashing between creating an upload and enqueueing it, a
worker dying after its visibility timeout was raised. The sweeper finds work that is not
finished and has not moved for a while and hands it to the dispatcher again:

- uploads not terminal, from the start of the flow (every stage is idempotent, so
  finished stages are skipped in milliseconds);
- notifications still pending (a receiver that was away longer than the notify
  queue's retries);
- jobs (backfill, erasure) that failed, were never started, or whose process died.

An upload that keeps coming back (for example one that kills its worker each time)
is failed after ``max_attempts`` stage runs instead of looping forever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from core.flow import FLOW
from core.pipeline import delivery, jobs
from core.pipeline.dispatch import Dispatcher
from core.pipeline.status import NON_TERMINAL, mark_failed
from core.services import Services
from core.storage.models import Upload

log = logging.getLogger(__name__)

# Four stages per upload; a few full retries on top before giving up.
MAX_STAGE_RUNS = 16


def note_attempt(svc: Services, upload_id: int, max_runs: int = MAX_STAGE_RUNS) -> bool:
    """Count one stage run of an upload; False (and the upload failed) past the limit.
    A video runs embed once per segment, so it is allowed two runs more per segment."""
    with svc.db.session() as s:
        s.execute(update(Upload).where(Upload.id == upload_id).values(attempts=Upload.attempts + 1))
        n, segments = s.execute(
            select(Upload.attempts, Upload.segments_total).where(Upload.id == upload_id)
        ).one_or_none() or (None, None)
    max_runs += 2 * (segments or 0)
    if n is not None and n > max_runs:
        mark_failed(svc, upload_id, f"gave up after {n - 1} stage runs (a worker kept dying?)")
        return False
    return True


@dataclass
class SweepResult:
    requeued: list[int]  # upload ids
    notifications: list[int] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)


def sweep(
    svc: Services,
    dispatcher: Dispatcher,
    older_than_s: float = 120.0,
    limit: int = 1000,
    backlog: int = 0,
) -> SweepResult:
    """Re-dispatch uploads, notifications and jobs idle for ``older_than_s``. With
    messages still queued (``backlog`` > 0) idle work is more likely waiting its turn
    than lost, so the wait is ten times longer: re-dispatching a backlog would only
    double it. A notification waits at least the notify queue's longest backoff, so one
    whose Celery retry is still scheduled is not sent twice over."""
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
    notify_wait = (
        max(wait, 2 * svc.settings.notify_backoff_max_s) if not dispatcher.synchronous else wait
    )
    notifications = delivery.stuck(svc, notify_wait, limit)
    for nid in notifications:
        log.warning("re-dispatching notification %s (pending for %.0f s)", nid, notify_wait)
        dispatcher.notify(nid)
    again = jobs.stuck(svc, wait)
    for job in again:
        log.warning("re-dispatching %s job %s (%s)", job.kind, job.id, job.error or "not finished")
        dispatcher.send(FLOW[job.kind], job.id)  # each kind of job is the stage of its name
    return SweepResult(stuck, notifications, [j.id for j in again])
