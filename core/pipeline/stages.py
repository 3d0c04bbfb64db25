"""The four stages: crop -> embed -> index -> classify.

Each takes ids, reads what it needs from storage, writes its results to storage
and advances the upload's status. Each is idempotent: run twice (a redelivered
task), it does nothing new the second time, and it never creates a second match
or alert for the same (face, identity).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, select

from core.errors import Rejected
from core.faces.base import DetectedFace
from core.faces.crops import loose_crop
from core.faces.quality import face_quality
from core.intake import DecodedImage
from core.pipeline.status import mark_rejected, reached
from core.pipeline.verdict import score_matches
from core.services import Services
from core.storage.models import Face, Identity, Match, ReferencePhoto, Upload, UploadStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageResult:
    upload_id: int
    status: str
    proceed: bool  # whether the next stage has work


def _load_upload(svc: Services, upload_id: int) -> Upload:
    with svc.db.session() as s:
        up = s.get(Upload, upload_id)
        if up is None:
            raise LookupError(f"upload {upload_id} does not exist")
        s.expunge(up)
        return up


def decode_upload(svc: Services, up: Upload) -> DecodedImage:
    return svc.decode_stored(up.path)


def face_from_row(row: Face) -> DetectedFace:
    return DetectedFace(
        box=tuple(row.box),
        landmarks=np.asarray(row.landmarks, np.float32),
        score=row.det_score,
        extra=dict(row.extra or {}),
    )


# -- crop ----------------------------------------------------------------------------
def crop(svc: Services, upload_id: int) -> StageResult:
    """Decode the upload under the intake limits, detect faces, store aligned chips
    (for the embedder) and loose crops (for forensics and reports)."""
    up = _load_upload(svc, upload_id)
    if reached(up.status, UploadStatus.cropped):
        return StageResult(upload_id, up.status, not UploadStatus(up.status).terminal)
    try:
        img = decode_upload(svc, up)
    except Rejected as rej:
        mark_rejected(svc, upload_id, str(rej))
        return StageResult(upload_id, UploadStatus.rejected, False)

    backend = svc.face_backend
    st = svc.settings
    found = backend.detect(img.pixels)
    big = [f for f in found if min(f.width, f.height) >= st.min_face_px]
    notes = []
    if len(big) < len(found):
        notes.append(f"{len(found) - len(big)} face(s) under {st.min_face_px} px ignored")
    if len(big) > st.max_faces_per_image:
        notes.append(f"kept the {st.max_faces_per_image} largest of {len(big)} faces")
        big = sorted(big, key=lambda f: -f.area)[: st.max_faces_per_image]
        big.sort(key=lambda f: (f.box[0], f.box[1]))

    rows = []
    for idx, face in enumerate(big):
        chip = backend.align(img.pixels, face)
        base = f"crops/{upload_id}/{idx}"
        rows.append(
            dict(
                idx=idx,
                box=[float(v) for v in face.box],
                landmarks=np.asarray(face.landmarks).round(2).tolist(),
                extra=face.extra or None,
                det_score=float(face.score),
                quality=face_quality(face, chip),
                chip_path=svc.files.put_png(f"{base}_chip.png", chip),
                crop_path=svc.files.put_png(f"{base}_crop.png", loose_crop(img.pixels, face)),
                face_backend=backend.name,
            )
        )
    with svc.db.session() as s:
        row = s.get(Upload, upload_id)
        if row is None or reached(row.status, UploadStatus.cropped):
            return StageResult(upload_id, row.status if row else "missing", False)
        # A previous attempt may have died after writing faces: replace them.
        s.execute(delete(Face).where(Face.upload_id == upload_id))
        for r in rows:
            s.add(Face(upload_id=upload_id, **r))
        row.width, row.height, row.file_format = img.width, img.height, img.format
        row.n_faces = len(rows)
        row.reason = "; ".join(notes) or None
        row.status = UploadStatus.cropped if rows else UploadStatus.done
        return StageResult(upload_id, row.status, bool(rows))


# -- embed ---------------------------------------------------------------------------
def embed(svc: Services, upload_ids: list[int]) -> list[StageResult]:
    """Embed the chips of several uploads in one batch (the embed queue batches)."""
    with svc.db.session() as s:
        ups = {u.id: u.status for u in s.scalars(select(Upload).where(Upload.id.in_(upload_ids)))}
        todo = [i for i in upload_ids if ups.get(i) == UploadStatus.cropped]
        faces = list(
            s.execute(
                select(Face.id, Face.chip_path, Face.face_backend).where(
                    Face.upload_id.in_(todo), Face.embedding.is_(None)
                )
            )
        )
    backend = svc.face_backend
    for fid, _, name in faces:
        if name != backend.name:
            raise RuntimeError(f"face {fid} was cropped by {name}, this worker runs {backend.name}")
    vecs = backend.embed_chips([svc.files.read_rgb(path) for _, path, _ in faces])
    results = []
    with svc.db.session() as s:
        for (fid, _, _), vec in zip(faces, vecs, strict=True):
            s.get(Face, fid).embedding = vec.astype(np.float32).tobytes()
        for uid in upload_ids:
            row = s.get(Upload, uid)
            if row is None:
                continue
            if row.status == UploadStatus.cropped:
                row.status = UploadStatus.embedded
            results.append(StageResult(uid, row.status, not UploadStatus(row.status).terminal))
    return results


# -- index ---------------------------------------------------------------------------
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


def index(svc: Services, upload_id: int) -> StageResult:
    """Add the upload's faces to the face index and match them to protected identities."""
    up = _load_upload(svc, upload_id)
    if reached(up.status, UploadStatus.indexed):
        return StageResult(upload_id, up.status, not UploadStatus(up.status).terminal)
    if up.status != UploadStatus.embedded:
        raise RuntimeError(f"upload {upload_id} is {up.status}, index needs embedded")
    backend = svc.face_backend.name
    face_ids, vecs = _face_vectors(svc, upload_id)
    svc.vectors.add_faces(backend, face_ids, [upload_id] * len(face_ids), vecs)
    candidates = best_identity_hits(svc, vecs)
    with svc.db.session() as s:
        for fid, per_identity in zip(face_ids, candidates, strict=True):
            for identity_id, (sim, ref_id) in per_identity.items():
                add_match(s, fid, identity_id, sim, ref_id)
        row = s.get(Upload, upload_id)
        if row.status == UploadStatus.embedded:
            row.status = UploadStatus.indexed
        return StageResult(upload_id, row.status, True)


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
    """Insert a match unless (face, identity) already has one. True if inserted."""
    exists = s.scalar(
        select(Match.id).where(Match.face_id == face_id, Match.identity_id == identity_id)
    )
    if exists is not None:
        return False
    s.add(
        Match(face_id=face_id, identity_id=identity_id, similarity=float(sim), reference_id=ref_id)
    )
    s.flush()
    return True


# -- classify ------------------------------------------------------------------------
def classify(svc: Services, upload_id: int) -> StageResult:
    """Score every face that claims a protected identity; alert on fakes; notify."""
    up = _load_upload(svc, upload_id)
    if up.status == UploadStatus.done or UploadStatus(up.status).terminal:
        return StageResult(upload_id, up.status, False)
    if up.status != UploadStatus.indexed:
        raise RuntimeError(f"upload {upload_id} is {up.status}, classify needs indexed")
    score_matches(svc, upload_id=upload_id)
    with svc.db.session() as s:
        row = s.get(Upload, upload_id)
        if row.status == UploadStatus.indexed:
            row.status = UploadStatus.done
        return StageResult(upload_id, row.status, False)
