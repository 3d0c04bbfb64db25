"""Erasing a protected person, as a durable job that can be finished after a crash.

Order matters for privacy: (1) the identity is marked as being erased in the same
transaction that opens the job row, so from that commit on it matches nothing and
raises no alert; (2) its reference vectors and (3) reference files are removed, each
checked; (4) last, in one transaction, its rows go and its alerts are anonymised, and
the job is marked done. A failure in 2-4 leaves the identity row (marked) and the job
(failed, with the error): running the erasure again, by hand (``identity remove``) or
from the sweeper, finishes it. The job row holds the identity's id, never its name.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from core.services import Services
from core.storage.models import Alert, Identity, Job, JobStatus, ReferencePhoto

log = logging.getLogger(__name__)

ERASURE = "erasure"
# A running erasure not updated for this long is taken to have died with its process.
STALE_RUNNING = timedelta(minutes=10)


def find_identity(s, name_or_id: str | int) -> Identity | None:
    """By name, or by id (an int, or a string of digits no identity is named)."""
    if isinstance(name_or_id, int):
        return s.get(Identity, name_or_id)
    ident = s.scalar(select(Identity).where(Identity.name == name_or_id))
    if ident is None and name_or_id.isdigit():
        ident = s.get(Identity, int(name_or_id))
    return ident


def _open_job(svc: Services, name_or_id: str | int) -> tuple[int, int, str, list[int]] | None:
    """Mark the identity as being erased and open (or reopen) its erasure job."""
    now = datetime.now(UTC)
    with svc.db.session() as s:
        ident = find_identity(s, name_or_id)
        if ident is None:
            return None
        if ident.erasing_at is None:
            ident.erasing_at = now
        job = s.scalar(
            select(Job).where(
                Job.kind == ERASURE, Job.identity_id == ident.id, Job.status != JobStatus.done
            )
        )
        if job is None:
            job = Job(kind=ERASURE, identity_id=ident.id, attempts=0)
            s.add(job)
        job.status, job.error, job.attempts = JobStatus.running, None, job.attempts + 1
        job.updated_at = now
        s.flush()
        ref_ids = list(
            s.scalars(select(ReferencePhoto.id).where(ReferencePhoto.identity_id == ident.id))
        )
        return job.id, ident.id, ident.name, ref_ids


def erase_identity(svc: Services, name_or_id: str | int) -> dict | None:
    """Erase a person: reference vectors, reference photos (files and rows), matches,
    and the personal data in their alerts (name, link, reference, per-signal details).
    Kept: each alert's upload id, face box, scores and times, marked ``erased_at``.
    Returns counts (None if no such identity); raises if a step fails, leaving the job
    failed and the identity marked, so running it again finishes it."""
    opened = _open_job(svc, name_or_id)
    if opened is None:
        return None
    job_id, identity_id, name, ref_ids = opened
    try:
        n_vectors = svc.vectors.delete_identity(identity_id, ref_ids)
        svc.files.remove_tree(f"references/{identity_id}")
        if svc.files.abs(f"references/{identity_id}").exists():
            raise RuntimeError(f"reference files of identity {identity_id} still present")
        with svc.db.session() as s:
            n_alerts = s.execute(
                update(Alert)
                .where(Alert.identity_id == identity_id)
                .values(
                    identity_id=None,
                    identity_name=None,
                    reference_id=None,
                    parts=None,
                    erased_at=datetime.now(UTC),
                )
            ).rowcount
            ident = s.get(Identity, identity_id)
            if ident is not None:
                s.delete(ident)  # cascades to reference_photos and matches
            job = s.get(Job, job_id)
            job.status, job.finished_at = JobStatus.done, datetime.now(UTC)
            job.detail = {
                "references_removed": len(ref_ids),
                "vectors_removed": n_vectors,
                "alerts_anonymised": n_alerts,
            }
    except Exception as exc:
        with svc.db.session() as s:
            job = s.get(Job, job_id)
            job.status, job.error = JobStatus.failed, f"{type(exc).__name__}: {exc}"[:4000]
        log.error(
            "erasing identity %s failed (run the erasure again to finish): %s", identity_id, exc
        )
        raise
    svc.reference_cache.pop(identity_id, None)
    log.info("erased identity %s", identity_id)
    return {
        "id": identity_id,
        "name": name,
        "references_removed": len(ref_ids),
        "vectors_removed": n_vectors,
        "alerts_anonymised": n_alerts,
    }


def resume_erasures(svc: Services, max_attempts: int = 10) -> list[int]:
    """Finish erasures that failed or whose process died (the sweeper calls this).
    Returns the identity ids it finished."""
    cutoff = datetime.now(UTC) - STALE_RUNNING
    with svc.db.session() as s:
        todo = list(
            s.scalars(
                select(Job.identity_id).where(
                    Job.kind == ERASURE,
                    Job.attempts < max_attempts,
                    (Job.status == JobStatus.failed)
                    | ((Job.status == JobStatus.running) & (Job.updated_at < cutoff)),
                )
            )
        )
    done = []
    for identity_id in todo:
        try:
            if erase_identity(svc, identity_id) is None:
                # No row, yet the job is open (removed by other means): make sure
                # nothing of the person is left, then close it.
                svc.vectors.delete_identity(identity_id)
                svc.files.remove_tree(f"references/{identity_id}")
                _close_orphan_jobs(svc, identity_id)
            done.append(identity_id)
        except Exception:
            log.exception("resuming the erasure of identity %s failed", identity_id)
    return done


def _close_orphan_jobs(svc: Services, identity_id: int) -> None:
    with svc.db.session() as s:
        s.execute(
            update(Job)
            .where(Job.kind == ERASURE, Job.identity_id == identity_id)
            .where(Job.status != JobStatus.done)
            .values(status=JobStatus.done, finished_at=datetime.now(UTC))
        )
