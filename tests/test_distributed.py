"""The distributed stack end to end, with real services on this machine.

Redis (broker), PostgreSQL (metadata), a milvus-lite server (vectors), one Celery
worker process per queue, the ingest API, the folder watcher and Flower, all started
by ``idwatch up`` and stopped by ``idwatch down``. Uploads arrive through the watched
folder and the HTTP API; alerts must arrive as signed webhooks, one per alert, also
after a worker is killed with SIGKILL mid-run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from benchmarks.common import WebhookReceiver, duplicate_alerts, free_port, idwatch, unique_bytes
from benchmarks.common import wait_until as _wait
from core.demo.dataset import load_manifest, load_references
from core.flow import FLOW
from core.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.distributed]

REDIS_DB = 11
SECRET = "test-webhook-secret"
API_KEY = "test-api-key"
TERMINAL = ("done", "rejected", "failed")


@pytest.fixture
def stack(tmp_path, pg_url, demo_set):
    import redis

    redis.Redis(db=REDIS_DB).flushdb()
    receiver = WebhookReceiver(SECRET)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDWATCH_")}
    env.update(
        {
            "IDWATCH_DATA_DIR": str(tmp_path / "data"),
            "IDWATCH_DATABASE_URL": pg_url,
            "IDWATCH_BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            "IDWATCH_MILVUS_URI": f"http://127.0.0.1:{free_port()}",
            "IDWATCH_API_KEYS": API_KEY,
            "IDWATCH_API_PORT": str(free_port()),
            "IDWATCH_FLOWER_BASIC_AUTH": "admin:flower-pw",
            "IDWATCH_FLOWER_PORT": str(free_port()),
            "IDWATCH_NOTIFIER": "log,webhook",
            "IDWATCH_WEBHOOK_URL": receiver.url,
            "IDWATCH_WEBHOOK_SECRET": SECRET,
            "IDWATCH_WATCH_SETTLE_S": "0.5",
            # Short limits so a message left unacknowledged by a killed worker comes back fast.
            "IDWATCH_TASK_TIME_LIMIT_S": "40",
            "IDWATCH_TASK_SOFT_TIME_LIMIT_S": "35",
            "IDWATCH_VISIBILITY_TIMEOUT_S": "45",
        }
    )
    idwatch(env, "up", "--watch", str(inbox))
    engine = create_engine(pg_url)
    try:
        yield {
            "env": env,
            "inbox": inbox,
            "receiver": receiver,
            "engine": engine,
            "demo": demo_set,
            "api": f"http://127.0.0.1:{env['IDWATCH_API_PORT']}",
            "flower": f"http://127.0.0.1:{env['IDWATCH_FLOWER_PORT']}",
        }
    finally:
        engine.dispose()
        subprocess.run(
            [sys.executable, "-m", "workers.cli", "down"], env=env, capture_output=True, timeout=120
        )
        receiver.close()
        if os.environ.get("IDWATCH_KEEP_TEST_LOGS"):
            shutil.copytree(
                tmp_path / "data" / "logs", os.environ["IDWATCH_KEEP_TEST_LOGS"], dirs_exist_ok=True
            )


def _scalar(engine, sql: str, **kw):
    with engine.connect() as c:
        return c.execute(text(sql), kw).scalar()


def _statuses(engine) -> dict[str, int]:
    with engine.connect() as c:
        return dict(c.execute(text("SELECT status, count(*) FROM uploads GROUP BY status")).all())


def _all_terminal(engine, n: int) -> bool:
    st = _statuses(engine)
    return sum(st.values()) >= n and set(st) <= set(TERMINAL)


def test_distributed_end_to_end(stack):
    env, engine, rx, demo = stack["env"], stack["engine"], stack["receiver"], stack["demo"]
    _wait(lambda: _port_answers(stack["api"] + "/healthz"), 90, "the ingest API")
    refs = load_references(demo)
    idwatch(env, "identity", "add", "Eileen Collins", *map(str, refs["Eileen Collins"]))

    rows = load_manifest(demo / "manifest.csv")
    via_folder, via_api = rows[::2], rows[1::2]
    for r in via_folder:  # written as .part, then renamed: the watcher must wait for it
        part = stack["inbox"] / (r.path.name + ".part")
        part.write_bytes(r.path.read_bytes())
        part.rename(stack["inbox"] / r.path.name)
    ids = []
    with httpx.Client(base_url=stack["api"], headers={"X-API-Key": API_KEY}) as http:
        assert httpx.get(stack["api"] + "/alerts").status_code == 401
        for r in via_api:
            resp = http.post("/uploads", files={"file": (r.path.name, r.path.read_bytes())})
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["upload_id"])
        _wait(lambda: _all_terminal(engine, len(rows)), 240, "all uploads terminal")
        assert _statuses(engine) == {"done": len(rows)}
        for uid in ids:
            assert http.get(f"/uploads/{uid}").json()["status"] == "done"

    # Stage 1 matched exactly Eileen's 3 real photos, 4 face swaps and her spliced and
    # inpainted photos (core.demo.splice: her own face, another scene).
    assert _scalar(
        engine,
        "SELECT count(DISTINCT f.upload_id) FROM matches m JOIN faces f ON f.id = m.face_id",
    ) == 7 + sum(r.method in ("splice", "inpaint") for r in rows)
    n_alerts = _scalar(engine, "SELECT count(*) FROM alerts")
    assert n_alerts == _scalar(engine, "SELECT count(*) FROM matches WHERE is_fake")
    # One signed webhook per alert (verified with the Standard Webhooks library), none
    # with a bad signature, none twice.
    _wait(lambda: len(rx.deliveries) >= n_alerts, 60, "webhook deliveries")
    time.sleep(1)
    assert rx.bad == 0
    assert len(rx.deliveries) == n_alerts == len({d["id"] for d in rx.deliveries})
    assert _scalar(engine, "SELECT count(*) FROM deliveries WHERE ok") == n_alerts

    # Flower: auth required, and it lists a worker for each queue of the flow.
    flower = stack["flower"]
    _wait(lambda: _port_answers(flower + "/healthcheck", auth=("admin", "flower-pw")), 60, "Flower")
    assert httpx.get(flower + "/api/workers").status_code == 401
    workers = _wait(
        lambda: httpx.get(
            flower + "/api/workers?refresh=1", auth=("admin", "flower-pw"), timeout=10
        ).json(),
        60,
        "Flower to list workers",
    )
    assert {w.split("@")[0] for w in workers} == set(FLOW.queues)
    assert "notify" in FLOW.queues

    # Registration backfill on the queue: Tom Hanks's earlier uploads are found.
    idwatch(env, "identity", "add", "Tom Hanks", *map(str, refs["Tom Hanks"]))
    tom = _scalar(engine, "SELECT id FROM identities WHERE name = 'Tom Hanks'")
    _wait(
        lambda: (
            _scalar(
                engine,
                "SELECT count(*) FROM matches WHERE identity_id = :i AND fake_score IS NOT NULL",
                i=tom,
            )
            == 7
        ),
        120,
        "backfill",
    )

    # JSON only: a pickled message is refused by the worker and runs nothing.
    pickled = _pickle_message(env, demo)
    time.sleep(4)
    assert _scalar(engine, "SELECT status FROM uploads WHERE id = :i", i=pickled) == "received"
    log = (Path(env["IDWATCH_DATA_DIR"]) / "logs" / "worker-crop.log").read_text()
    assert "Refusing to deserialize untrusted content of type pickle" in log

    status = json.loads(idwatch(env, "status", "--json").stdout)
    assert status["uploads"] == {"done": len(rows), "received": 1}  # + the refused one
    assert set(status["queues"]) == {"crop", "embed", "index", "classify", "notify"}
    # Delivery ran on its own queue: one idwatch.notify task per alert, none failed.
    tasks = httpx.get(
        flower + "/api/tasks?taskname=idwatch.notify", auth=("admin", "flower-pw"), timeout=10
    ).json()
    assert len(tasks) >= n_alerts and all(t["state"] == "SUCCESS" for t in tasks.values())


def _pickle_message(env: dict, demo: Path) -> int:
    """Submit an upload, then send its crop task as a pickle (as an attacker could)."""
    code = (
        "import sys; from pathlib import Path; from core.services import Services; "
        "from core.pipeline.sources.submit import submit_path; from workers.app import app; "
        "svc = Services(); uid = submit_path(svc, Path(sys.argv[1])).upload_id; "
        "app.send_task('idwatch.crop', args=[uid], queue='crop', serializer='pickle'); "
        "print(uid)"
    )
    img = demo / "references" / "eileen_collins.png"
    data = unique_bytes(img, 999)
    target = Path(env["IDWATCH_DATA_DIR"]) / "pickled.png"
    target.write_bytes(data)
    res = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(res.stdout.strip().splitlines()[-1])


def _port_answers(url: str, auth=None) -> bool:
    try:
        return httpx.get(url, auth=auth, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def test_worker_killed_mid_run_loses_nothing(stack):
    from workers.ops import supervisor

    env, engine, rx, demo = stack["env"], stack["engine"], stack["receiver"], stack["demo"]
    settings = Settings(data_dir=env["IDWATCH_DATA_DIR"])
    refs = load_references(demo)
    idwatch(env, "identity", "add", "Eileen Collins", *map(str, refs["Eileen Collins"]))
    rows = load_manifest(demo / "manifest.csv")
    n = 0
    for k in range(3):  # 60 uploads with distinct bytes
        for r in rows:
            (stack["inbox"] / f"{k}_{r.path.stem}.png").write_bytes(unique_bytes(r.path, k))
            n += 1
    # Kill each model worker (whole process group, SIGKILL) while work is in flight;
    # supervisord starts it again.
    for name in ("worker-crop", "worker-embed", "worker-classify"):
        _wait(lambda: _scalar(engine, "SELECT count(*) FROM uploads") > 5, 60, "work in flight")
        os.killpg(supervisor.pid_of(settings, name), signal.SIGKILL)
        time.sleep(1.5)
    _wait(lambda: _all_terminal(engine, n), 420, "every upload terminal after the kills")
    st = _statuses(engine)
    assert sum(st.values()) == n and st.get("done") == n, st
    assert duplicate_alerts(engine) == 0
    n_alerts = _scalar(engine, "SELECT count(*) FROM alerts")
    _wait(lambda: len({d["id"] for d in rx.deliveries}) >= n_alerts, 120, "deliveries")
    assert len({d["id"] for d in rx.deliveries}) == n_alerts
