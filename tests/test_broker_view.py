"""What the sweeper reads from the broker: real Celery messages in the local Redis (a
database of its own), no worker."""

from __future__ import annotations

import time

import pytest

from core.flow import JOB, NOTIFICATION, SEGMENT, UPLOAD
from core.settings import Settings
from workers.app import make_celery
from workers.ops.queues import in_flight, queued, recently_delivered

REDIS_DB = 8


@pytest.fixture
def broker(tmp_path):
    import redis

    r = redis.Redis(db=REDIS_DB)
    try:
        r.flushdb()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"Redis not reachable: {exc}")
    settings = Settings(data_dir=tmp_path, broker_url=f"redis://127.0.0.1:6379/{REDIS_DB}")
    yield settings, make_celery(settings)
    r.flushdb()


def test_queued_messages_name_their_subjects(broker):
    settings, app = broker
    app.send_task("idwatch.crop", args=[17], queue="crop")
    app.send_task("idwatch.crop_segment", args=[5], queue="crop")
    app.send_task("idwatch.embed", args=[18], queue="embed", priority=3)  # another list
    app.send_task("idwatch.notify", args=[4], queue="notify", countdown=60)
    app.send_task("idwatch.backfill", args=[2], queue="classify")
    app.send_task("celery.ping", args=[], queue="crop")  # not ours: ignored
    assert queued(settings) == {
        (UPLOAD, 17),
        (SEGMENT, 5),
        (UPLOAD, 18),
        (NOTIFICATION, 4),
        (JOB, 2),
    }


def test_a_message_taken_but_not_acknowledged_counts_for_a_while(broker):
    """A worker took the message (kombu keeps it in ``unacked`` until the ack): it is
    no longer queued, but it is in flight until ``grace_s`` after delivery."""
    settings, app = broker
    app.send_task("idwatch.index", args=[42], queue="index")
    with app.connection_for_read() as conn:
        q = conn.SimpleQueue("index")
        msg = q.get(timeout=5)  # as a worker takes it: delivered, not acknowledged
        assert (UPLOAD, 42) not in queued(settings)
        assert (UPLOAD, 42) in recently_delivered(settings, within_s=60)
        time.sleep(1.2)
        assert (UPLOAD, 42) not in recently_delivered(settings, within_s=1)  # a dead worker's
        assert 42 in in_flight(settings, grace_s=60).get(UPLOAD, set())
        msg.ack()
        q.close()
    assert (UPLOAD, 42) not in recently_delivered(settings, within_s=60)
