"""Stage 2: forgery verdicts for faces that claim a protected identity, and alerts.

Used by the classify stage (new uploads) and by backfill (a newly registered
identity found in earlier uploads). Scoring a match twice is harmless: the
match row is updated, and the alert is unique per (face, identity).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from core.errors import Rejected
from core.faces.crops import loose_crop
from core.forensics.base import ForensicInput, ReferenceView
from core.services import Services
from core.storage.models import Alert, Face, Identity, Match, ReferencePhoto, Upload

log = logging.getLogger(__name__)


def reference_views(svc: Services, identity_id: int) -> list[ReferenceView]:
    """The identity's authentic references, decoded and cropped once per process."""
    from core.faces.base import DetectedFace

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
    from core.pipeline.stages import face_from_row

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
        for u in {id(u): u for *_, u in todo}.values():  # one upload, several faces
            s.expunge(u)
    created = 0
    if not todo:
        return created
    decoded: dict[int, object] = {}
    detector = svc.detector
    threshold = svc.fake_threshold
    for match_id, identity_id, sim, _ref_id, face, face_id, up in todo:
        if up.id not in decoded:
            try:
                decoded[up.id] = svc.decode_stored(up.path)
            except Rejected as rej:  # the stored file changed under us: not this face's fault
                log.error("upload %s unreadable at classify: %s", up.id, rej)
                raise
        img = decoded[up.id]
        emb = _face_embedding(svc, face_id)
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
        is_fake = result.score >= threshold
        with svc.db.session() as s:
            m = s.get(Match, match_id)
            if m is None:  # identity removed meanwhile
                continue
            m.fake_score, m.is_fake, m.detector = result.score, is_fake, result.detector
            m.parts = {k: float(v) for k, v in result.parts.items()}
            if is_fake:
                created += _add_alert(s, m, face_id, up.id)
    notify_pending(svc)
    return created


def _face_embedding(svc: Services, face_id: int) -> np.ndarray | None:
    with svc.db.session() as s:
        e = s.scalar(select(Face.embedding).where(Face.id == face_id))
    return None if e is None else np.frombuffer(e, np.float32)


def _add_alert(s, m: Match, face_id: int, upload_id: int) -> int:
    if (
        s.scalar(
            select(Alert.id).where(Alert.face_id == face_id, Alert.identity_key == m.identity_id)
        )
        is not None
    ):
        return 0
    ident = s.get(Identity, m.identity_id)
    if ident is None or ident.erasing_at is not None:
        return 0  # being erased: raise nothing in the person's name
    try:
        with s.begin_nested():  # a concurrent worker may insert the same alert
            s.add(
                Alert(
                    face_id=face_id,
                    upload_id=upload_id,
                    identity_key=m.identity_id,
                    identity_id=m.identity_id,
                    identity_name=ident.name if ident else None,
                    reference_id=m.reference_id,
                    similarity=m.similarity,
                    fake_score=m.fake_score,
                    decision="fake",
                    detector=m.detector,
                    parts=m.parts,
                )
            )
        return 1
    except IntegrityError:
        return 0


# A claim older than this is taken to belong to a worker that died while delivering.
NOTIFY_CLAIM_LEASE = timedelta(minutes=10)


def _claim(svc: Services, alert_id: int) -> bool:
    """Atomically take the delivery of one alert (compare-and-set on the row)."""
    now = datetime.now(UTC)
    with svc.db.session() as s:
        res = s.execute(
            update(Alert)
            .where(
                Alert.id == alert_id,
                Alert.notified_at.is_(None),
                or_(
                    Alert.notify_claimed_at.is_(None),
                    Alert.notify_claimed_at < now - NOTIFY_CLAIM_LEASE,
                ),
            )
            .values(notify_claimed_at=now)
        )
        return res.rowcount == 1


def notify_pending(svc: Services) -> int:
    """Send every alert not yet delivered, each by exactly one worker at a time; mark it
    delivered when every notifier took it. A failed delivery is released for a retry."""
    from core.alerts.notify import AlertEvent

    with svc.db.session() as s:
        rows = list(
            s.execute(
                select(Alert, Face, Upload)
                .join(Face, Alert.face_id == Face.id)
                .join(Upload, Alert.upload_id == Upload.id)
                .where(Alert.notified_at.is_(None), Alert.erased_at.is_(None))
            )
        )
        events = [
            AlertEvent(
                alert_id=a.id,
                upload_id=u.id,
                face_id=f.id,
                identity_id=a.identity_id,
                identity_name=a.identity_name,
                similarity=round(a.similarity, 4),
                fake_score=round(a.fake_score, 4),
                decision=a.decision,
                detector=a.detector,
                upload_name=u.original_name,
                box=list(f.box),
                created_at=a.created_at.isoformat(),
            )
            for a, f, u in rows
        ]
    sent = 0
    for ev in events:
        if not _claim(svc, ev.alert_id):
            continue  # another worker is delivering it, or did
        delivered = True
        try:
            for n in svc.notifiers:
                n.notify(ev)
        except Exception as exc:  # delivery is retried on the next pass
            log.error("notifying alert %s failed: %s", ev.alert_id, exc)
            delivered = False
        with svc.db.session() as s:
            a = s.get(Alert, ev.alert_id)
            if a is None:
                continue
            if delivered:
                a.notified_at = datetime.now(UTC)
                sent += 1
            else:
                a.notify_claimed_at = None
    return sent
