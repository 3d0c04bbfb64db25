"""Durable jobs about a protected person (``jobs`` rows): backfill and erasure.

A job row is opened where the work is decided (registration, ``identity remove``) in
the same transaction as what makes it necessary, then handed to the dispatcher like
any stage. Its status always ends terminal: pending -> running -> done, or failed with
the error, which the sweeper runs again (up to ``MAX_ATTEMPTS`` runs). A job row holds
the identity's id, never its name.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.services import Services
from core.storage.inserts import insert_missing
from core.storage.models import Job, JobStatus

BACKFILL, ERASURE = "backfill", "erasure"
# A running job not updated for this long is taken to have died with its process.
STALE_RUNNING = timedelta(minutes=10)
MAX_ATTEMPTS = 10


def open_job(s: Session, kind: str, identity_id: int) -> Job:
    """The identity's unfinished job of this kind, reopened as pending, or a new one.

    At most one is unfinished (a partial unique index, migration 0008), and the database
    decides which (``insert_missing``): two registrations of one person at the same
    moment share one job instead of one of them failing. The row is locked until the
    caller commits, so a run finishing meanwhile sees it reopened (``finish``)."""
    now = datetime.now(UTC)
    insert_missing(s, Job, kind=kind, identity_id=identity_id, attempts=0, status=JobStatus.pending)
    job = s.scalar(
        select(Job)
        .where(Job.kind == kind, Job.identity_id == identity_id, Job.status != JobStatus.done)
        .with_for_update()
    )
    job.status, job.error, job.updated_at = JobStatus.pending, None, now
    s.flush()
    return job


def start(svc: Services, job_id: int) -> Job | None:
    """Mark a job running (one more attempt); None when it is done already."""
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.status == JobStatus.done:
            return None
        job.status, job.error = JobStatus.running, None
        job.attempts += 1
        job.updated_at = datetime.now(UTC)
        s.flush()
        s.expunge(job)
        return job


def finish(s: Session, job_id: int, detail: dict, attempt: int | None = None) -> None:
    """Mark done, in the caller's transaction (the one that commits the job's work).

    With ``attempt`` (this run's, from ``start``) only if nobody reopened or started the
    job since this run began: a backfill reopened because more reference photos came
    in has work this run did not see, so it stays open (with this run's counts) for the
    run its reopening sent."""
    job = s.get(Job, job_id, with_for_update=True)
    job.detail = detail
    if attempt is not None and (job.status != JobStatus.running or job.attempts != attempt):
        return
    job.status, job.finished_at = JobStatus.done, datetime.now(UTC)


def mark_failed(svc: Services, job_id: int, error: str) -> None:
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        if job is not None and job.status != JobStatus.done:
            job.status, job.error = JobStatus.failed, error[:4000]


def get(svc: Services, job_id: int) -> Job | None:
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        if job is not None:
            s.expunge(job)
        return job


def stuck(
    svc: Services, idle_s: float, max_attempts: int = MAX_ATTEMPTS, skip: Collection[int] = ()
) -> list[Job]:
    """Jobs to run again: failed ones, pending ones nobody started for ``idle_s`` (the
    message was lost), running ones whose process died; not those in ``skip`` (their
    message is still on its way). Set back to pending (the error kept), so the next
    sweep waits a full period before sending them again."""
    now = datetime.now(UTC)
    with svc.db.session() as s:
        jobs = list(
            s.scalars(
                select(Job)
                .where(
                    Job.attempts < max_attempts,
                    or_(
                        Job.status == JobStatus.failed,
                        (Job.status == JobStatus.pending)
                        & (Job.updated_at < now - timedelta(seconds=idle_s)),
                        (Job.status == JobStatus.running) & (Job.updated_at < now - STALE_RUNNING),
                    ),
                )
                .order_by(Job.id)
            )
        )
        jobs = [j for j in jobs if j.id not in skip]
        for job in jobs:
            job.status, job.updated_at = JobStatus.pending, now
        s.flush()
        s.expunge_all()
    return jobs
