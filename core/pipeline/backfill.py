"""The backfill job: a person registered after uploads were scanned is looked for in
those uploads' faces, and each face that claims them gets a verdict (and alerts, which
go on to notify), as if the person had been protected when the face arrived.

A registration opens a ``backfill`` job row in the transaction that stores the
references; the dispatcher runs it (here, or on the classify queue, whose workers hold
the detector); the sweeper runs it again if it failed or its message was lost. A run
again finishes what a crashed one left: the matches it committed but never scored are
scored now. Its inserts race those of the index stage (the same face, the same person,
at the same moment) and are idempotent at the database (``core.storage.inserts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
from sqlalchemy import or_, select

from core.pipeline import delivery, jobs, video_stages
from core.pipeline.matching import add_match, best_identity_hits, set_match_track
from core.pipeline.verdicts import reference_views, score_matches
from core.services import Services
from core.storage.models import Alert, Face, Identity, Match, Upload, UploadStatus

BACKFILL = jobs.BACKFILL


@dataclass
class BackfillResult:
    faces_checked: int = 0
    matches: int = 0
    alerts: int = 0
    upload_ids: list[int] = field(default_factory=list)

    @classmethod
    def from_detail(cls, detail: dict | None) -> BackfillResult:
        keys = ("faces_checked", "matches", "alerts", "upload_ids")
        return cls(**{k: v for k, v in (detail or {}).items() if k in keys})


def _face(claim: tuple) -> int:
    return claim[0]


def run_backfill(svc: Services, job_id: int) -> list[int]:
    """The backfill stage: run the job; hands the person's pending notifications on."""
    job = jobs.start(svc, job_id)
    if job is None:
        return []
    try:
        res = backfill(svc, job.identity_id)
        with svc.db.session() as s:
            jobs.finish(s, job_id, dict(res.__dict__), attempt=job.attempts)
    except Exception as exc:
        jobs.mark_failed(svc, job_id, f"{type(exc).__name__}: {exc}")
        raise
    return delivery.pending(svc, Alert.identity_id == job.identity_id)


def backfill(svc: Services, identity_id: int) -> BackfillResult:
    """Find earlier uploads' faces that claim this identity and give them a verdict."""
    views = reference_views(svc, identity_id)
    vecs = np.stack([v.embedding for v in views if v.embedding is not None]) if views else None
    res = BackfillResult()
    if vecs is None or len(vecs) == 0:
        return res
    candidates: set[int] = set()
    for hits in svc.vectors.search_faces(
        svc.face_backend.name, vecs, min_score=svc.match_threshold
    ):
        candidates.update(h.id for h in hits)
    res.faces_checked = len(candidates)
    with svc.db.session() as s:
        rows = list(
            s.execute(
                select(Face.id, Face.embedding).where(
                    Face.id.in_(list(candidates)), Face.embedding.is_not(None)
                )
            )
        )
    # A video's faces claim by track, as the index stage decided them: one match per
    # track (on its best face), never one per frame.
    in_videos = video_stages.video_faces(svc, [fid for fid, _ in rows])
    rows = [r for r in rows if r[0] not in in_videos]
    # Decide each candidate face the way the index stage does, against every protected
    # identity, so a face claims the new person only if it would have claimed them then.
    claims = (
        best_identity_hits(svc, np.stack([np.frombuffer(e, np.float32) for _, e in rows]))
        if rows
        else []
    )
    track_claims = video_stages.track_claims(
        svc, sorted(in_videos), identity_id, partial(best_identity_hits, svc)
    )
    image_claims = [
        (fid, *per_identity[identity_id], None)
        for (fid, _), per_identity in zip(rows, claims, strict=True)
        if identity_id in per_identity
    ]
    with svc.db.session() as s:
        ident = s.get(Identity, identity_id)
        if ident is None or ident.erasing_at is not None:
            return res
        new = []
        # In face order, as the index stage inserts: two transactions inserting the same
        # matches wait on each other in one order, never in a deadlock.
        for fid, sim, ref_id, track_id in sorted([*image_claims, *track_claims], key=_face):
            if add_match(s, fid, identity_id, sim, ref_id):
                if track_id is not None:
                    set_match_track(s, fid, identity_id, track_id)
                new.append(fid)
        # This run's matches, and those a crashed run committed but never scored: their
        # uploads are done, so no classify stage will score them (one still on its way
        # is scored by its own classify).
        match_ids = list(
            s.scalars(
                select(Match.id)
                .join(Face, Face.id == Match.face_id)
                .join(Upload, Upload.id == Face.upload_id)
                .where(
                    Match.identity_id == identity_id,
                    Match.fake_score.is_(None),
                    or_(Match.face_id.in_(new), Upload.status == UploadStatus.done),
                )
                .order_by(Match.id)
            )
        )
        res.upload_ids = sorted(
            set(
                s.scalars(
                    select(Face.upload_id)
                    .join(Match, Match.face_id == Face.id)
                    .where(Match.id.in_(match_ids))
                )
            )
        )
    res.matches = len(match_ids)
    if match_ids:
        res.alerts = score_matches(svc, match_ids=match_ids)
    return res
