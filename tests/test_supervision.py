"""`idwatch up` supervises what it starts; the sweeper recovers a worker that died whole.

Real processes on this machine: supervisord, Celery workers, a milvus-lite server, the
sweeper and the folder watcher, over the local Redis (a database of its own) and
PostgreSQL (a fresh database). Nothing here restarts a shared service.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from benchmarks.common import free_port, idwatch, unique_bytes
from benchmarks.common import wait_until as _wait
from core.demo.dataset import insightface_path
from core.flow import FLOW, UPLOAD
from core.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.distributed]

REDIS_DB = 9


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "gone"


@pytest.fixture
def env(tmp_path, pg_url):
    import redis

    redis.Redis(db=REDIS_DB).flushdb()
    e = {k: v for k, v in os.environ.items() if not k.startswith("IDWATCH_")}
    e.update(
        {
            "IDWATCH_DATA_DIR": str(tmp_path / "data"),
            "IDWATCH_DATABASE_URL": pg_url,
            "IDWATCH_BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "IDWATCH_MILVUS_URI": f"http://127.0.0.1:{free_port()}",
            "IDWATCH_WATCH_SETTLE_S": "0.3",
        }
    )
    yield e
    subprocess.run(
        [sys.executable, "-m", "workers.cli", "down"], env=e, capture_output=True, timeout=180
    )
    redis.Redis(db=REDIS_DB).flushdb()


def _settings(env: dict) -> Settings:
    return Settings(
        data_dir=env["IDWATCH_DATA_DIR"],
        database_url=env["IDWATCH_DATABASE_URL"],
        broker_url=env["IDWATCH_BROKER_URL"],
        milvus_uri=env["IDWATCH_MILVUS_URI"],
    )


def _status(env: dict) -> dict:
    return json.loads(idwatch(env, "status", "--json").stdout)


def _proc(status: dict, name: str) -> dict:
    return next(p for p in status["processes"] if p["name"] == name)


def test_up_restarts_a_killed_process_and_down_stops_everything(env):
    from workers.ops import supervisor

    idwatch(env, "up")
    st = _settings(env)
    names = {p["name"] for p in supervisor.processes(st)}
    assert names == {"milvus", "sweep", *(f"worker-{q}" for q in FLOW.queues)}

    # kill -9 a supervised worker (its whole group): supervisord starts it again.
    old = supervisor.pid_of(st, "worker-crop")
    os.killpg(old, signal.SIGKILL)
    _wait(
        lambda: (
            (p := _proc(_status(env), "worker-crop"))["state"] == "RUNNING"
            and p["pid"] not in (None, old)
        ),
        60,
        "worker-crop restarted",
    )
    status = _status(env)
    assert _proc(status, "worker-crop")["restarts"] == 1
    assert _proc(status, "worker-embed")["restarts"] == 0

    # A worker started by hand is seen by status (pid file) and by Celery's ping.
    hand = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "--queues", "embed"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(
            lambda: any(p["pid"] == hand.pid for p in _status(env)["processes"]),
            60,
            "the hand-started worker in status",
        )
        _wait(
            lambda: f"embed.{hand.pid}@" in " ".join(_status(env)["workers"]),
            60,
            "the hand-started worker answering Celery's ping",
        )
        supervised = [p["pid"] for p in supervisor.processes(st)]
        sup_pid = int((st.data_dir / "run" / "supervisord.pid").read_text())

        idwatch(env, "down", timeout=180)
        assert hand.wait(timeout=30) is not None  # stopped by down, not by us
        assert not supervisor.running(st)
        for pid in [sup_pid, *supervised]:
            assert not _alive(pid), pid
        assert _status(env)["processes"] == []
    finally:
        if hand.poll() is None:
            hand.kill()


def test_a_worker_killed_whole_while_holding_a_task_is_recovered_by_the_sweeper(env, tmp_path):
    """Production settings (visibility timeout 900 s), sweeper at 5 s: the index worker
    holds an upload (Milvus is down, so the task waits on its retries) and is killed
    whole. Its message stays unacknowledged in Redis for 900 s; the sweeper must not
    touch the upload while the worker lives, and must re-dispatch it once it is dead."""
    from workers.ops import supervisor

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    idwatch(env, "up", "--watch", str(inbox), "--sweep-after", "5")
    st = _settings(env)
    assert st.visibility_timeout_s == 900
    engine = create_engine(env["IDWATCH_DATABASE_URL"])
    sweep_log = st.data_dir / "logs" / "sweep.log"

    def status_of(uid: int) -> str | None:
        with engine.connect() as c:
            return c.execute(text("SELECT status FROM uploads WHERE id = :i"), {"i": uid}).scalar()

    try:
        # Warm up: every worker has loaded its models (a worker too busy to answer the
        # sweeper's inspect for long is taken as dead: a duplicate run, not a loss).
        (inbox / "warm.png").write_bytes(unique_bytes(insightface_path("t1.jpg"), 0))
        _wait(
            lambda: _scalar(engine, "SELECT count(*) FROM uploads WHERE status = 'done'"),
            240,
            "the warm-up upload done",
        )
        supervisor.rpc(st).supervisor.stopProcess("milvus")
        (inbox / "held.png").write_bytes(unique_bytes(insightface_path("t1.jpg"), 1))
        uid = _wait(
            lambda: _scalar(engine, "SELECT max(id) FROM uploads WHERE status = 'embedded'"),
            120,
            "the upload waiting on index",
        )
        # Held by the live index worker for longer than the sweeper's 5 s: left alone.
        from workers.ops.queues import held_by_workers

        _wait(lambda: (UPLOAD, uid) in held_by_workers(st), 60, "the index worker holding it")
        time.sleep(12)
        assert f"re-dispatching upload {uid} " not in sweep_log.read_text()
        assert status_of(uid) == "embedded"

        os.killpg(supervisor.pid_of(st, "worker-index"), signal.SIGKILL)
        killed = time.monotonic()
        supervisor.rpc(st).supervisor.startProcess("milvus")
        _wait(lambda: status_of(uid) == "done", 180, "the upload done after the kill")
        recovered_s = time.monotonic() - killed
        assert f"re-dispatching upload {uid} " in sweep_log.read_text()
        assert recovered_s < 180 < st.visibility_timeout_s, recovered_s
    finally:
        engine.dispose()


def _scalar(engine, sql: str):
    with engine.connect() as c:
        return c.execute(text(sql)).scalar()
