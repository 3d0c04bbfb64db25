"""Each pipeline stage run on its own, with no broker, and re-run (redelivery)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select

from core.demo.dataset import insightface_path, load_references
from core.pipeline.detection import crop, embed, embed_batch
from core.pipeline.identities import register_identity
from core.pipeline.matching import index
from core.pipeline.sources.submit import submit_bytes, submit_path
from core.pipeline.verdicts import classify
from core.storage.models import Alert, Face, Match, Notification, Upload, UploadStatus


def _count(svc, model, *where) -> int:
    with svc.db.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def _status(svc, upload_id) -> Upload:
    with svc.db.session() as s:
        up = s.get(Upload, upload_id)
        s.expunge(up)
        return up


def test_submit_deduplicates_by_content(svc, tmp_path):
    data = insightface_path("t1.jpg").read_bytes()
    a = submit_bytes(svc, data, "a.jpg")
    b = submit_bytes(svc, data, "b.jpg")
    assert a.created and not b.created and a.upload_id == b.upload_id
    assert _status(svc, a.upload_id).status == UploadStatus.received
    assert svc.files.abs(_status(svc, a.upload_id).path).read_bytes() == data


def test_unreadable_file_gets_a_rejected_row(svc, tmp_path):
    sub = submit_path(svc, tmp_path / "missing.jpg")
    up = _status(svc, sub.upload_id)
    assert up.status == UploadStatus.rejected and up.reason.startswith("not_found")


def test_stages_one_by_one_and_again(svc):
    sub = submit_path(svc, insightface_path("t1.jpg"))
    uid = sub.upload_id

    assert crop(svc, uid) == [uid]  # handed on to embed
    assert _status(svc, uid).status == UploadStatus.cropped
    up = _status(svc, uid)
    assert (up.width, up.height, up.file_format, up.n_faces) == (1280, 886, "JPEG", 6)
    with svc.db.session() as s:
        faces = list(s.scalars(select(Face).where(Face.upload_id == uid).order_by(Face.idx)))
        assert [f.idx for f in faces] == list(range(6))
        for f in faces:
            assert svc.files.abs(f.chip_path).exists() and svc.files.abs(f.crop_path).exists()
            assert 0 < f.quality <= 1 and f.embedding is None
    # Redelivered crop: nothing new.
    assert crop(svc, uid) == [uid]
    assert _status(svc, uid).status == UploadStatus.cropped
    assert _count(svc, Face, Face.upload_id == uid) == 6

    assert embed(svc, uid) == [uid]
    assert _status(svc, uid).status == UploadStatus.embedded
    with svc.db.session() as s:
        vecs = [
            np.frombuffer(f.embedding, np.float32)
            for f in s.scalars(select(Face).where(Face.upload_id == uid))
        ]
    assert all(v.shape == (svc.face_backend.embedding_dim,) for v in vecs)
    assert np.allclose([np.linalg.norm(v) for v in vecs], 1.0, atol=1e-4)
    embed(svc, uid)  # again: no error, same state
    assert _status(svc, uid).status == UploadStatus.embedded

    assert index(svc, uid) == [uid]
    assert _status(svc, uid).status == UploadStatus.indexed
    assert svc.vectors.count(svc.vectors.faces_name(svc.face_backend.name)) == 6
    index(svc, uid)
    assert svc.vectors.count(svc.vectors.faces_name(svc.face_backend.name)) == 6
    assert _count(svc, Match) == 0  # nobody is protected yet

    assert classify(svc, uid) == []  # no alert, so nothing to notify
    assert _status(svc, uid).status == UploadStatus.done
    assert classify(svc, uid) == []
    assert _status(svc, uid).status == UploadStatus.done


def test_no_face_upload_is_done_with_zero_faces(svc, demo_set):
    sub = submit_path(svc, demo_set / "uploads" / "coffee.jpg")
    assert crop(svc, sub.upload_id) == []  # nothing goes on
    up = _status(svc, sub.upload_id)
    assert up.status == UploadStatus.done and up.n_faces == 0


def test_bad_bytes_are_rejected_with_reason(svc):
    sub = submit_bytes(svc, b"<html><body>not an image</body></html>", "evil.jpg")
    assert crop(svc, sub.upload_id) == []
    up = _status(svc, sub.upload_id)
    assert up.status == UploadStatus.rejected
    assert up.reason.startswith("not_an_image")


def test_matching_and_classify_are_idempotent(svc, demo_set):
    refs = load_references(demo_set)
    register_identity(svc, "Eileen Collins", refs["Eileen Collins"])
    fake = demo_set / "uploads" / "fake_eileen_person1.png"
    uid = submit_path(svc, fake).upload_id
    crop(svc, uid)
    embed(svc, uid)
    index(svc, uid)
    assert _count(svc, Match) == 1
    pending = classify(svc, uid)
    with svc.db.session() as s:
        m = s.scalar(select(Match))
        assert m.fake_score is not None and 0 <= m.fake_score <= 1
        assert m.is_fake == (m.fake_score >= svc.fake_threshold)
    n_alerts = _count(svc, Alert)
    # One notification per alert and notifier (the test services use "memory"),
    # handed on to notify; a redelivered classify hands the same ones on again.
    assert len(pending) == n_alerts == _count(svc, Notification)
    assert classify(svc, uid) == pending
    # A redelivered index + classify creates no second match, alert or notification.
    with svc.db.session() as s:
        s.get(Upload, uid).status = UploadStatus.embedded
    index(svc, uid)
    classify(svc, uid)
    assert _count(svc, Match) == 1 and _count(svc, Alert) == n_alerts
    assert _count(svc, Notification) == n_alerts


def test_embed_batches_the_uploads_waiting_behind_it(svc, demo_set):
    ids = [
        submit_path(svc, demo_set / "uploads" / n).upload_id for n in ("person1.jpg", "person3.jpg")
    ]
    for uid in ids:
        crop(svc, uid)
    # The first upload's embed takes the other waiting one along (one model call) but
    # hands on only its own upload: the other's own message does that, so no upload
    # goes through index and classify twice.
    assert embed(svc, ids[0]) == [ids[0]]
    with svc.db.session() as s:
        assert s.get(Upload, ids[1]).status == UploadStatus.embedded
        assert all(
            f.embedding is not None for f in s.scalars(select(Face).where(Face.upload_id == ids[1]))
        )
    # The second one's own message then finds it embedded and only passes it on.
    assert embed(svc, ids[1]) == [ids[1]]
    assert embed_batch(svc, []) == []
