"""The sweeper finishes uploads whose messages were lost; poison uploads are capped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from core.demo.dataset import insightface_path
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


def test_sweep_waits_longer_while_queues_hold_a_backlog(svc):
    uid = submit_path(svc, insightface_path("t1.jpg")).upload_id
    _age(svc, uid, 600)
    assert sweep(svc, InlineDispatcher(svc), older_than_s=120, backlog=5).requeued == []
    _age(svc, uid, 1500)
    assert sweep(svc, InlineDispatcher(svc), older_than_s=120, backlog=5).requeued == [uid]
