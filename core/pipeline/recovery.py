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

Idle is not lost: under a backlog an upload waits in its queue for longer than any
sensible ``older_than_s``, and queueing it again would only lengthen the backlog (a
1,000-upload soak once re-dispatched 13,738 times). So the caller passes what the broker
still holds (``in_flight``: messages queued, and tasks held by workers that answer), and
only idle work with no message on its way is sent again. A worker killed whole while
holding a task holds nothing any more: its message sits unacknowledged in Redis until
the visibility timeout (900 s), and the sweeper sends it again after ``older_than_s``.

An upload that keeps coming back (for example one that kills its worker each time)
is failed after ``max_attempts`` stage runs instead of looping forever.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from core.flow import FLOW, JOB, NOTIFICATION, SEGMENT, UPLOAD
from core.pipeline import delivery, jobs
from core.pipeline.dispatch import Dispatcher
from core.pipeline.status import NON_TERMINAL, mark_failed
from core.services import Services
from core.storage.models import Upload, VideoSegment

log = logging.getLogger(__name__)

# Four stages per upload; a few full retries on top before giving up.
MAX_STAGE_RUNS = 16


def note_attempt(svc: Services, upload_id: int, max_runs: int = MAX_STAGE_RUNS) -> bool:
    """Count one stage run of an upload; False (and the upload failed) past the limit.
    A video runs embed once per segment, so it is allowed two runs more per segment."""
    with svc.db.session() as s:  # one statement: every task of the flow runs this
        n, segments = s.execute(
            update(Upload)
            .where(Upload.id == upload_id)
            .values(attempts=Upload.attempts + 1)
            .returning(Upload.attempts, Upload.segments_total)
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
    in_flight: int = 0  # idle uploads left alone: their message is still on its way


def _uploads_in_flight(svc: Services, in_flight: Mapping[str, Collection[int]]) -> set[int]:
    """Uploads with a message still on its way: their own, or one of their segments'."""
    ids = set(in_flight.get(UPLOAD, ()))
    segments = list(in_flight.get(SEGMENT, ()))
    if segments:
        with svc.db.session() as s:
            ids.update(
                s.scalars(select(VideoSegment.upload_id).where(VideoSegment.id.in_(segments)))
            )
    return ids


def sweep(
    svc: Services,
    dispatcher: Dispatcher,
    older_than_s: float = 120.0,
    limit: int = 1000,
    in_flight: Mapping[str, Collection[int]] | None = None,
) -> SweepResult:
    """Re-dispatch uploads, notifications and jobs idle for ``older_than_s`` whose
    message is lost. ``in_flight`` (from the broker: ids per subject kind of
    ``core.flow`` whose message waits in a queue or is held by a live worker; read
    *before* this call) names work that is only waiting its turn: it is left alone, so a
    backlog is never queued twice over. Without it (inline dispatcher) nothing is in
    flight. A notification waits at least the notify queue's longest backoff, so one
    whose Celery retry is still scheduled is not sent twice over."""
    in_flight = in_flight or {}
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    waiting = _uploads_in_flight(svc, in_flight)
    with svc.db.session() as s:
        idle = list(
            s.scalars(
                select(Upload.id)
                .where(Upload.status.in_(NON_TERMINAL), Upload.updated_at < cutoff)
                .order_by(Upload.id)
            )
        )
        stuck = [uid for uid in idle if uid not in waiting][:limit]
        if stuck:  # touch them so the next sweep waits a full period again
            s.execute(
                update(Upload).where(Upload.id.in_(stuck)).values(updated_at=datetime.now(UTC))
            )
    for uid in stuck:
        log.warning("re-dispatching upload %s (idle %.0f s, no message queued)", uid, older_than_s)
        dispatcher.upload(uid)
    notify_wait = (
        max(older_than_s, 2 * svc.settings.notify_backoff_max_s)
        if not dispatcher.synchronous
        else older_than_s
    )
    notifications = delivery.stuck(
        svc, notify_wait, limit, skip=set(in_flight.get(NOTIFICATION, ()))
    )
    for nid in notifications:
        log.warning("re-dispatching notification %s (pending for %.0f s)", nid, notify_wait)
        dispatcher.notify(nid)
    again = jobs.stuck(svc, older_than_s, skip=set(in_flight.get(JOB, ())))
    for job in again:
        log.warning("re-dispatching %s job %s (%s)", job.kind, job.id, job.error or "not finished")
        dispatcher.send(FLOW[job.kind], job.id)  # each kind of job is the stage of its name
    return SweepResult(stuck, notifications, [j.id for j in again], len(idle) - len(stuck))
