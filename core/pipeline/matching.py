"""Stage index: add an upload's faces to the face index and decide which protected
identities each face claims (a ``Match`` row per claim).

Backfill decides claims the same way (``best_identity_hits``), so a face claims a person
registered later only if it would have claimed them at upload time.

A video's faces are first tracked across the whole video; each track makes one identity
decision (``core.video.tracking.track_identity``) and gets one match per identity it
claims, on its best-matching face, with the ``track_id``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from sqlalchemy import select, update

from core.pipeline import video_stages
from core.pipeline.status import load_upload, reached
from core.services import Services
from core.storage.inserts import insert_missing
from core.storage.models import Face, Identity, Match, ReferencePhoto, Upload, UploadStatus
from core.video.tracking import track_identity


def _face_vectors(svc: Services, upload_id: int) -> tuple[list[int], np.ndarray]:
    with svc.db.session() as s:
        rows = list(
            s.execute(
                select(Face.id, Face.embedding)
                .where(Face.upload_id == upload_id)
                .order_by(Face.idx)
            )
        )
    if any(e is None for _, e in rows):
        raise RuntimeError(f"upload {upload_id} has faces without embeddings")
    dim = svc.face_backend.embedding_dim
    vecs = np.stack([np.frombuffer(e, np.float32) for _, e in rows]) if rows else np.zeros((0, dim))
    return [fid for fid, _ in rows], vecs.astype(np.float32)


def index(svc: Services, upload_id: int) -> list[int]:
    """Add the upload's faces to the face index and match them to protected identities."""
    up = load_upload(svc, upload_id)
    if reached(up.status, UploadStatus.indexed):
        return [] if UploadStatus(up.status).terminal else [upload_id]
    if up.status != UploadStatus.embedded:
        raise RuntimeError(f"upload {upload_id} is {up.status}, index needs embedded")
    backend = svc.face_backend.name
    face_ids, vecs = _face_vectors(svc, upload_id)
    svc.vectors.add_faces(backend, face_ids, [upload_id] * len(face_ids), vecs)
    if video_stages.is_video(up):
        track_matches(svc, upload_id)
        candidates: list[dict[int, tuple[float, int]]] = [{} for _ in face_ids]
    else:
        candidates = best_identity_hits(svc, vecs)
    claims = [
        (fid, identity_id, sim, ref_id)
        for fid, per_identity in zip(face_ids, candidates, strict=True)
        for identity_id, (sim, ref_id) in per_identity.items()
    ]
    with svc.db.session() as s:
        # In key order, as backfill inserts: two transactions inserting the same
        # matches then wait on each other in one order, never in a deadlock.
        for fid, identity_id, sim, ref_id in sorted(claims):
            add_match(s, fid, identity_id, sim, ref_id)
        row = s.get(Upload, upload_id)
        if row.status == UploadStatus.embedded:
            row.status = UploadStatus.indexed
        return [upload_id]


def track_matches(svc: Services, upload_id: int) -> None:
    """A video: track its faces, then one match per (track, claimed identity)."""
    matcher = partial(best_identity_hits, svc)
    claims = [
        (track, claim)
        for track in video_stages.track_upload(svc, upload_id)
        for claim in track_identity(track, matcher)
    ]
    claims.sort(key=lambda tc: (tc[0].observations[tc[1].best_index].key, tc[1].identity_id))
    with svc.db.session() as s:
        for track, claim in claims:
            face_id = track.observations[claim.best_index].key
            add_match(s, face_id, claim.identity_id, claim.similarity, claim.reference_id)
            set_match_track(s, face_id, claim.identity_id, track.track_id)


def set_match_track(s, face_id: int, identity_id: int, track_id: int) -> None:
    s.execute(
        update(Match)
        .where(Match.face_id == face_id, Match.identity_id == identity_id)
        .values(track_id=track_id)
    )


def best_identity_hits(svc: Services, vecs: np.ndarray) -> list[dict[int, tuple[float, int]]]:
    """For each face vector: {identity_id: (best cosine, reference id)} for the identities
    it claims: over the match threshold and within ``claim_margin`` of its best match.

    A face can only pretend to be one person: when it matches several protected people,
    the clearly weaker matches are look-alikes, and scoring them would raise alerts in
    the wrong names. Near-ties keep both. Exact search over the (small) reference
    collection, grouped per identity in Python; no filtered ANN search.

    A vector counts only if the database holds its reference photo, for the same
    identity, and that identity is not being erased: a vector left behind by a failed
    erasure can never make a face claim anyone."""
    thr, margin = svc.match_threshold, svc.settings.claim_margin
    per_face = svc.vectors.search_references(svc.face_backend.name, vecs, limit=256)
    live = live_references(svc, {h.id for hits in per_face for h in hits if h.score >= thr})
    out = []
    for hits in per_face:
        best: dict[int, tuple[float, int]] = {}
        for h in hits:
            if live.get(h.id) != h.owner:
                continue
            if h.score >= thr and h.score > best.get(h.owner, (-2.0, 0))[0]:
                best[h.owner] = (h.score, h.id)
        top = max((sim for sim, _ in best.values()), default=0.0)
        out.append({i: v for i, v in best.items() if v[0] >= top - margin})
    return out


def live_references(svc: Services, ref_ids: set[int]) -> dict[int, int]:
    """{reference id: identity id} of these references whose identity is protected now."""
    if not ref_ids:
        return {}
    with svc.db.session() as s:
        return dict(
            s.execute(
                select(ReferencePhoto.id, ReferencePhoto.identity_id)
                .join(Identity, Identity.id == ReferencePhoto.identity_id)
                .where(ReferencePhoto.id.in_(sorted(ref_ids)), Identity.erasing_at.is_(None))
            ).all()
        )


def add_match(s, face_id: int, identity_id: int, sim: float, ref_id: int | None) -> bool:
    """Insert a match unless (face, identity) has one; True if this call inserted it.

    The unique key decides (``insert_missing``), not a look-up first: a backfill and the
    index stage of a new upload may claim the same face for the same person at the same
    moment, and neither may fail for it."""
    row = insert_missing(
        s,
        Match,
        face_id=face_id,
        identity_id=identity_id,
        similarity=float(sim),
        reference_id=ref_id,
    )
    return row is not None
