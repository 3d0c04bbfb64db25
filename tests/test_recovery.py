"""The sweeper finishes uploads whose messages were lost; poison uploads are capped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from core.demo.dataset import insightface_path
from core.flow import SEGMENT, UPLOAD
from core.pipeline.detection import crop
from core.pipeline.dispatch import InlineDispatcher
from core.pipeline.recovery import MAX_STAGE_RUNS, note_attempt, sweep
from core.pipeline.sources.submit import submit_path
from core.pipeline.status import get_status
from core.storage.models import Upload


def _age(svc, upload_id: int, seconds: float) -> None:
    with svc.db.session() as s:
        s.execute(
            update(Upload)
            .where(Upload.id == upload_id)
            .values(updated_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


def test_sweep_redispatches_only_stale_uploads(svc):
    lost = submit_path(svc, insightface_path("t1.jpg")).upload_id  # never dispatched
    crop(svc, lost)  # and a second one stuck half-way
    fresh = submit_path(svc, insightface_path("Tom_Hanks_54745.png")).upload_id
    _age(svc, lost, 600)
    res = sweep(svc, InlineDispatcher(svc), older_than_s=120)
    assert res.requeued == [lost]
    assert get_status(svc, lost) == "done"
    assert get_status(svc, fresh) == "received"  # recent: left alone
    assert sweep(svc, InlineDispatcher(svc), older_than_s=120).requeued == []


def test_stage_runs_are_capped(svc):
    uid = submit_path(svc, insightface_path("t1.jpg")).upload_id
    for _ in range(MAX_STAGE_RUNS):
        assert note_attempt(svc, uid)
    assert not note_attempt(svc, uid)
    assert get_status(svc, uid) == "failed"


def test_sweep_leaves_alone_what_the_broker_still_holds(svc):
    """Idle is not lost: an upload whose message still waits in a queue (or is held by a
    live worker) is not queued again, however long it waited; once the broker holds
    nothing for it, it is."""
    queued = submit_path(svc, insightface_path("t1.jpg")).upload_id
    lost = submit_path(svc, insightface_path("Tom_Hanks_54745.png")).upload_id
    for uid in (queued, lost):
        _age(svc, uid, 6000)
    res = sweep(svc, InlineDispatcher(svc), older_than_s=120, in_flight={UPLOAD: {queued}})
    assert res.requeued == [lost] and res.in_flight == 1
    assert get_status(svc, queued) == "received" and get_status(svc, lost) == "done"
    # Its message was taken by a worker that then died whole: nothing holds it any more.
    assert sweep(svc, InlineDispatcher(svc), older_than_s=120, in_flight={}).requeued == [queued]
    assert get_status(svc, queued) == "done"


def test_a_queued_segment_keeps_its_video_from_being_swept(svc):
    from core.storage.models import VideoSegment

    uid = submit_path(svc, insightface_path("t1.jpg")).upload_id
    with svc.db.session() as s:
        seg = VideoSegment(upload_id=uid, idx=0, start_s=0.0, end_s=1.0, max_frames=8, fps=2.0)
        s.add(seg)
        s.flush()
        seg_id = seg.id
    _age(svc, uid, 6000)
    res = sweep(svc, InlineDispatcher(svc), older_than_s=120, in_flight={SEGMENT: {seg_id}})
    assert res.requeued == [] and res.in_flight == 1
