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
from datetime import UTC, datetime

from sqlalchemy import select, update

from core.names import name_key
from core.pipeline import jobs
from core.services import Services
from core.storage.models import Alert, Identity, ReferencePhoto, Review

log = logging.getLogger(__name__)

ERASURE = jobs.ERASURE


def find_identity(s, name_or_id: str | int) -> Identity | None:
    """By name (matched as ``core.names.name_key``: case and spacing do not matter), or
    by id (an int, or a string of digits no identity is named)."""
    if isinstance(name_or_id, int):
        return s.get(Identity, name_or_id)
    ident = s.scalar(select(Identity).where(Identity.name_key == name_key(name_or_id)))
    if ident is None and name_or_id.isdigit():
        ident = s.get(Identity, int(name_or_id))
    return ident


def open_erasure(svc: Services, name_or_id: str | int) -> tuple[int, int, str] | None:
    """Mark the identity as being erased and open (or reopen) its erasure job, in one
    transaction: from this commit on the person matches nothing. Returns (job id,
    identity id, name), or None if there is no such identity."""
    with svc.db.session() as s:
        ident = find_identity(s, name_or_id)
        if ident is None:
            return None
        if ident.erasing_at is None:
            ident.erasing_at = datetime.now(UTC)
        job = jobs.open_job(s, ERASURE, ident.id)
        return job.id, ident.id, ident.name


def run_erasure(svc: Services, job_id: int) -> list[int]:
    """The erase stage: reference vectors (deleted, checked), reference files (checked),
    then in one transaction the rows, the alerts anonymised and the job done. Raises if
    a step fails, leaving the job failed and the identity marked, so running it again
    finishes it. Nothing comes after it."""
    job = jobs.start(svc, job_id)
    if job is None:
        return []
    identity_id = job.identity_id
    try:
        with svc.db.session() as s:
            ref_ids = list(
                s.scalars(
                    select(ReferencePhoto.id).where(ReferencePhoto.identity_id == identity_id)
                )
            )
        n_vectors = svc.vectors.delete_identity(identity_id, ref_ids)
        svc.files.remove_tree(f"references/{identity_id}")
        if svc.files.abs(f"references/{identity_id}").exists():
            raise RuntimeError(f"reference files of identity {identity_id} still present")
        with svc.db.session() as s:
            s.execute(
                update(Review)
                .where(
                    Review.alert_id.in_(select(Alert.id).where(Alert.identity_id == identity_id))
                )
                .values(note=None)
            )
            n_alerts = s.execute(
                update(Alert)
                .where(Alert.identity_id == identity_id)
                .values(
                    identity_id=None,
                    identity_name=None,
                    reference_id=None,
                    parts=None,
                    review_note=None,  # a reviewer's note may name or describe the person
                    erased_at=datetime.now(UTC),
                )
            ).rowcount
            ident = s.get(Identity, identity_id)
            if ident is not None:
                s.delete(ident)  # cascades to reference_photos and matches
            jobs.finish(
                s,
                job_id,
                {
                    "references_removed": len(ref_ids),
                    "vectors_removed": n_vectors,
                    "alerts_anonymised": n_alerts,
                },
            )
    except Exception as exc:
        jobs.mark_failed(svc, job_id, f"{type(exc).__name__}: {exc}")
        log.error(
            "erasing identity %s failed (run the erasure again to finish): %s", identity_id, exc
        )
        raise
    svc.reference_cache.pop(identity_id, None)
    log.info("erased identity %s", identity_id)
    return []


def erase_identity(svc: Services, name_or_id: str | int) -> dict | None:
    """Erase a person now, in this process: reference vectors, reference photos (files
    and rows), matches, and the personal data in their alerts (name, link, reference,
    per-signal details). Kept: each alert's upload id, face box, scores and times, marked
    ``erased_at``. Returns counts (None if no such identity); raises if a step fails,
    leaving the job failed and the identity marked, so running it again finishes it."""
    opened = open_erasure(svc, name_or_id)
    if opened is None:
        return None
    job_id, identity_id, name = opened
    run_erasure(svc, job_id)
    return erasure_result(svc, job_id, identity_id, name)


def erasure_result(svc: Services, job_id: int, identity_id: int, name: str) -> dict:
    job = jobs.get(svc, job_id)
    return {"id": identity_id, "name": name, **(job.detail or {})}
