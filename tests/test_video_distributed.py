"""A video through the distributed stack: Redis, PostgreSQL, a milvus-lite server and one
Celery worker process per queue (``idwatch up``).

The demo clip with a swapped segment and the real clip, 5 s each, cut into 2 s segments:
each video's crop message splits into three ``crop_segment`` messages on the crop queue,
each segment goes on to embed, and the video reaches index once, when its last segment
is embedded. The alert names the moment inside the swapped segment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from benchmarks.common import free_port, idwatch
from core.demo.dataset import EILEEN, _write, eileen_collins_portrait

pytestmark = [pytest.mark.postgres, pytest.mark.distributed]

REDIS_DB = 10
SWAP_S = (2.0, 3.5)


def test_videos_through_the_queues(tmp_path, pg_url):
    import redis

    from core.demo.video import build_demo_video

    swap = build_demo_video(tmp_path / "swap.mp4", identity=EILEEN, swap_s=SWAP_S).path
    real = build_demo_video(tmp_path / "real.mp4", identity=None).path
    ref = tmp_path / "eileen.png"
    _write(ref, eileen_collins_portrait())

    redis.Redis(db=REDIS_DB).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDWATCH_")}
    env.update(
        {
            "IDWATCH_DATA_DIR": str(tmp_path / "data"),
            "IDWATCH_DATABASE_URL": pg_url,
            "IDWATCH_BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "IDWATCH_MILVUS_URI": f"http://127.0.0.1:{free_port()}",
            "IDWATCH_NOTIFIER": "log",
            "IDWATCH_VIDEO_SEGMENT_S": "2",
        }
    )
    engine = create_engine(pg_url)
    try:
        idwatch(env, "up")
        idwatch(env, "identity", "add", EILEEN, str(ref))
        res = idwatch(env, "scan", str(swap), str(real), "--wait", "300", "--json", timeout=400)
        summary = json.loads(res.stdout)
        assert summary["done"] == 2 and summary["judged_fake"] == 1, summary
        with engine.connect() as c:
            videos = c.execute(
                text(
                    "SELECT original_name, media_kind, segments_done, segments_total, status "
                    "FROM uploads ORDER BY id"
                )
            ).all()
            segments = c.execute(
                text("SELECT state, count(*) FROM video_segments GROUP BY state")
            ).all()
            [(t, track, name)] = c.execute(
                text(
                    "SELECT a.frame_time_s, a.track_id, a.identity_name FROM alerts a "
                    "JOIN uploads u ON u.id = a.upload_id WHERE u.original_name = :n"
                ),
                {"n": str(swap)},
            ).all()
            matches = c.execute(text("SELECT count(*) FROM matches")).scalar()
        assert [v[1:] for v in videos] == [("video", 3, 3, "done")] * 2
        assert segments == [("embedded", 6)]
        assert name == EILEEN and track is not None and SWAP_S[0] <= t < SWAP_S[1]
        assert matches == 1  # one per (track, identity), not one per frame
        status = json.loads(idwatch(env, "status", "--json").stdout)
        assert status["uploads"] == {"done": 2} and status["videos"] == []
    finally:
        engine.dispose()
        subprocess.run(
            [sys.executable, "-m", "workers.cli", "down"], env=env, capture_output=True, timeout=120
        )
