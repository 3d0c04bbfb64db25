"""Stages crop and embed: the faces of an upload, found, stored and embedded.

Each takes an upload id, reads what it needs from storage, writes its results to
storage, advances the upload's status and returns the upload ids the next stage gets.
Each is idempotent: run twice (a redelivered task), it does nothing new the second time.
A video's crop splits it into segments and its embed counts them
(``core.pipeline.video_stages``).
"""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import delete, select, update

from core.errors import Rejected
from core.faces.base import DetectedFace
from core.flow import Split
from core.intake import DecodedImage
from core.pipeline import video_stages
from core.pipeline.face_rows import face_row, keep_faces
from core.pipeline.status import NON_TERMINAL, load_upload, mark_rejected, reached
from core.services import Services
from core.storage.models import Face, Upload, UploadStatus

log = logging.getLogger(__name__)

_BEFORE_CROPPED = [str(s) for s in NON_TERMINAL if not reached(s, UploadStatus.cropped)]


def decode_upload(svc: Services, up: Upload) -> DecodedImage:
    return svc.decode_stored(up.path)


def face_from_row(row: Face) -> DetectedFace:
    return DetectedFace(
        box=tuple(row.box),
        landmarks=np.asarray(row.landmarks, np.float32),
        score=row.det_score,
        extra=dict(row.extra or {}),
    )


def _goes_on(upload_id: int, status: str) -> list[int]:
    return [] if UploadStatus(status).terminal else [upload_id]


# -- crop ----------------------------------------------------------------------------
def crop(svc: Services, upload_id: int) -> list[int] | Split:
    """Decode the upload under the intake limits, detect faces, store aligned chips
    (for the embedder) and loose crops (for forensics and reports). An upload with no
    usable face is done here; bad input is rejected with its reason. A video is probed
    and split into segments, each cropped by its own task."""
    up = load_upload(svc, upload_id)
    if video_stages.is_video(up):
        return video_stages.plan(svc, up)
    if reached(up.status, UploadStatus.cropped):
        return _goes_on(upload_id, up.status)
    try:
        img = decode_upload(svc, up)
    except Rejected as rej:
        mark_rejected(svc, upload_id, str(rej))
        return []

    backend = svc.face_backend
    st = svc.settings
    found = backend.detect(img.pixels)
    big, notes = keep_faces(found, st)
    rows = [face_row(svc, backend, img.pixels, face, upload_id, i) for i, face in enumerate(big)]
    with svc.db.session() as s:
        # Claimed by the write itself: a crop of the same upload running at the same
        # moment (a redelivered task) waits here for this transaction, then finds the
        # upload cropped and stores nothing. A look-up first would let both replace
        # the faces, and one of them fail on their unique (upload, idx) key.
        claimed = s.execute(
            update(Upload)
            .where(Upload.id == upload_id, Upload.status.in_(_BEFORE_CROPPED))
            .values(status=Upload.status)
        ).rowcount
        row = s.get(Upload, upload_id)
        if not claimed or row is None:
            return []
        # A previous attempt may have died after writing faces: replace them.
        s.execute(delete(Face).where(Face.upload_id == upload_id))
        for r in rows:
            s.add(Face(upload_id=upload_id, **r))
        row.width, row.height, row.file_format = img.width, img.height, img.format
        row.n_faces = len(rows)
        row.reason = "; ".join(notes) or None
        row.status = UploadStatus.cropped if rows else UploadStatus.done
        return _goes_on(upload_id, row.status)


# -- embed ---------------------------------------------------------------------------
def waiting_to_embed(svc: Services, upload_id: int) -> list[int]:
    """This upload and up to ``embed_batch_size - 1`` others already waiting in status
    ``cropped``: under a backlog one model call serves many faces; when idle it adds no
    waiting. The others' own embed messages then find them embedded and pass them on
    (two embed workers may embed one waiting upload twice: same vector, harmless)."""
    with svc.db.session() as s:
        others = s.scalars(
            select(Upload.id)
            .where(Upload.status == UploadStatus.cropped, Upload.id != upload_id)
            .order_by(Upload.id)
            .limit(max(0, svc.settings.embed_batch_size - 1))
        )
        return [upload_id, *others]


def embed(svc: Services, upload_id: int) -> list[int]:
    """Embed the chips of this upload and of the uploads waiting behind it, in one batch.
    Returns what goes on to index: this upload (and a video whose last segment the batch
    counted); the image uploads taken along are handed on by their own embed messages,
    so none goes through index and classify twice."""
    return embed_batch(svc, waiting_to_embed(svc, upload_id), owner=upload_id)


def embed_batch(svc: Services, upload_ids: list[int], owner: int | None = None) -> list[int]:
    with svc.db.session() as s:
        ups = {u.id: u.status for u in s.scalars(select(Upload).where(Upload.id.in_(upload_ids)))}
        videos = video_stages.segments_to_count(s, upload_ids)  # before their faces are read
        todo = [i for i in upload_ids if ups.get(i) == UploadStatus.cropped or i in videos]
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
    going_on = []
    with svc.db.session() as s:
        for (fid, _, _), vec in zip(faces, vecs, strict=True):
            s.get(Face, fid).embedding = vec.astype(np.float32).tobytes()
        for uid in upload_ids:
            row = s.get(Upload, uid)
            if row is None:
                continue
            if video_stages.is_video(row):  # goes on once, when its last segment is counted
                going_on += video_stages.count_embedded(s, uid, videos.get(uid, []))
                continue
            if row.status == UploadStatus.cropped:
                row.status = UploadStatus.embedded
            if owner is None or uid == owner:
                going_on += _goes_on(uid, row.status)
    return going_on
