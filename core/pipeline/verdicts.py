"""Stage classify: forgery verdicts for faces that claim a protected identity, and alerts.

``score_matches`` is shared by the classify stage (new uploads) and by backfill (a
newly registered identity found in earlier uploads). Scoring a match twice is harmless:
the match row is updated, and the alert is unique per (face, identity). A face that a
reviewer dismissed (or said is not this person), or a copy of it, raises no alert for
that person again (the review history goes to the alert rule). Each alert is
created with its notifications (one per notifier), which the notify stage delivers.

A video match (one per track and identity) is scored over several frames of its track
(``video_stages.score_match``); its alert points at the face seen at the worst moment
and carries that moment (``frame_time_s``) and the track.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core.errors import Rejected
from core.faces.base import DetectedFace
from core.faces.crops import loose_crop
from core.forensics.base import ForensicInput, ReferenceView
from core.pipeline import alert_rule, delivery, video_stages
from core.pipeline.detection import face_from_row
from core.pipeline.matching import best_identity_hits
from core.pipeline.status import load_upload
from core.review.suppression import review_history
from core.services import Services
from core.storage.models import (
    Alert,
    Face,
    Identity,
    Match,
    ReferencePhoto,
    Upload,
    UploadStatus,
)

log = logging.getLogger(__name__)


def reference_views(svc: Services, identity_id: int) -> list[ReferenceView]:
    """The identity's authentic references, decoded and cropped once per process."""
    with svc.db.session() as s:
        refs = list(
            s.scalars(select(ReferencePhoto).where(ReferencePhoto.identity_id == identity_id))
        )
        for r in refs:
            s.expunge(r)
        live = set(s.scalars(select(Identity.id).where(Identity.erasing_at.is_(None))))
    # Every worker drops decoded photos of people erased (or being erased) elsewhere.
    for stale in [i for i in svc.reference_cache if i not in live]:
        del svc.reference_cache[stale]
    if identity_id not in live:
        return []
    key = (identity_id, tuple(r.id for r in refs))
    cached = svc.reference_cache.get(identity_id)
    if cached is not None and cached[0] == key:
        return cached[1]
    views = []
    backend = svc.face_backend
    for r in refs:
        img = svc.decode_stored(r.path).pixels
        face = DetectedFace(
            tuple(r.box), np.asarray(r.landmarks, np.float32), 1.0, dict(r.extra or {})
        )
        emb = backend.embed(img, [face])[0] if r.face_backend == backend.name else None
        views.append(
            ReferenceView(image=img, face=face, face_crop=loose_crop(img, face), embedding=emb)
        )
    svc.reference_cache[identity_id] = (key, views)
    return views


def score_matches(
    svc: Services, upload_id: int | None = None, match_ids: list[int] | None = None
) -> int:
    """Score unscored matches (of one upload, or the given ids). Returns alerts created."""
    q = (
        select(Match, Face, Upload)
        .join(Face, Match.face_id == Face.id)
        .join(Upload, Face.upload_id == Upload.id)
        .join(Identity, Identity.id == Match.identity_id)
        .where(Match.fake_score.is_(None), Identity.erasing_at.is_(None))
    )
    if upload_id is not None:
        q = q.where(Face.upload_id == upload_id)
    if match_ids is not None:
        q = q.where(Match.id.in_(match_ids))
    with svc.db.session() as s:
        todo = [
            (m.id, m.identity_id, m.similarity, m.reference_id, face_from_row(f), f.id, u)
            for m, f, u in s.execute(q.order_by(Upload.id, Face.idx))
        ]
        # Read with the rows (no session per face later on).
        embeddings = {f_id: _vector(s.get(Face, f_id).embedding) for *_, f_id, _ in todo}
        for u in {id(u): u for *_, u in todo}.values():  # one upload, several faces
            s.expunge(u)
    created = 0
    if not todo:
        return created
    decoded: dict[int, object] = {}
    detector = svc.detector
    threshold = svc.fake_threshold
    for match_id, identity_id, sim, ref_id, face, face_id, up in todo:
        if video_stages.is_video(up):
            created += _score_video_match(svc, match_id, identity_id, sim, ref_id, face_id, up)
            continue
        if up.id not in decoded:
            try:
                decoded[up.id] = svc.decode_stored(up.path)
            except Rejected as rej:  # the stored file changed under us: not this face's fault
                log.error("upload %s unreadable at classify: %s", up.id, rej)
                raise
        img = decoded[up.id]
        emb = embeddings[face_id]
        inp = ForensicInput(
            image=img.pixels,
            face=face,
            face_crop=loose_crop(img.pixels, face),
            references=reference_views(svc, identity_id),
            identity_similarity=sim,
            embedding=emb,
            metadata=img.metadata,
            file_format=img.format,
        )
        result = detector.score(inp)
        with svc.db.session() as s:
            m = s.get(Match, match_id)
            if m is None:  # identity removed meanwhile
                continue
            m.fake_score, m.detector = result.score, result.detector
            m.is_fake = alert_rule.is_fake(result.score, threshold)
            m.parts = {k: float(v) for k, v in result.parts.items()}
            created += _add_alert(svc, s, m, face_id, up.id, threshold)
    return created


def _score_video_match(
    svc: Services,
    match_id: int,
    identity_id: int,
    sim: float,
    ref_id: int | None,
    face_id: int,
    up: Upload,
) -> int:
    v = video_stages.score_match(
        svc, up, face_id, identity_id, sim, ref_id,
        reference_views(svc, identity_id), partial(best_identity_hits, svc),
    )  # fmt: skip
    threshold = svc.fake_threshold
    with svc.db.session() as s:
        m = s.get(Match, match_id)
        if m is None:  # identity removed meanwhile
            return 0
        m.fake_score, m.detector, m.parts = v.score, v.detector, v.parts
        m.is_fake = alert_rule.is_fake(v.score, threshold)
        m.track_id = v.track_id
        return _add_alert(
            svc, s, m, v.face_id, up.id, threshold, frame_time_s=v.frame_time_s, track_id=v.track_id
        )


def _vector(e: bytes | None) -> np.ndarray | None:
    return None if e is None else np.frombuffer(e, np.float32)


def _add_alert(
    svc: Services,
    s,
    m: Match,
    face_id: int,
    upload_id: int,
    threshold: float,
    *,
    frame_time_s: float | None = None,
    track_id: int | None = None,
) -> int:
    already = s.scalar(
        select(Alert.id).where(Alert.face_id == face_id, Alert.identity_key == m.identity_id)
    )
    ident = s.get(Identity, m.identity_id)
    protected = ident is not None and ident.erasing_at is None
    if not alert_rule.raises_alert(m.fake_score, threshold, protected, already is not None):
        return 0
    # Only a face that would alert pays for the look-up of its review history.
    history = review_history(svc, s, face_id, m.identity_id)
    if not alert_rule.raises_alert(m.fake_score, threshold, protected, False, history):
        # Kept on the match so "why no alert?" has an answer.
        m.parts = {**(m.parts or {}), "review_suppressed": 1.0}
        log.info(
            "face %s: no alert for identity %s (reviewed: %s)",
            face_id,
            m.identity_id,
            ",".join(sorted(set(history))),
        )
        return 0
    try:
        with s.begin_nested():  # a concurrent worker may insert the same alert
            alert = Alert(
                face_id=face_id,
                upload_id=upload_id,
                identity_key=m.identity_id,
                identity_id=m.identity_id,
                identity_name=ident.name,
                reference_id=m.reference_id,
                similarity=m.similarity,
                fake_score=m.fake_score,
                decision="fake",
                detector=m.detector,
                parts=m.parts,
                frame_time_s=frame_time_s,
                track_id=track_id,
            )
            s.add(alert)
            s.flush()
            delivery.open_notifications(s, svc, alert.id)
        return 1
    except IntegrityError:
        return 0


# -- classify ------------------------------------------------------------------------
def classify(svc: Services, upload_id: int) -> list[int]:
    """Score every face of the upload that claims a protected identity and alert on
    fakes; the upload is then done. Returns the upload's pending notifications, for the
    notify stage (also on a redelivered run, so none is stranded by a crash between
    the commit and the hand-on)."""
    up = load_upload(svc, upload_id)
    if up.status != UploadStatus.done and UploadStatus(up.status).terminal:
        return []
    if up.status not in (UploadStatus.indexed, UploadStatus.done):
        raise RuntimeError(f"upload {upload_id} is {up.status}, classify needs indexed")
    if up.status == UploadStatus.indexed:
        score_matches(svc, upload_id=upload_id)
        with svc.db.session() as s:
            row = s.get(Upload, upload_id)
            if row.status == UploadStatus.indexed:
                row.status = UploadStatus.done
    return delivery.pending(svc, Alert.upload_id == upload_id)
