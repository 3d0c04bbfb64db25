"""Fault injection on the local distributed stack (also the soak run).

    python -m benchmarks.faults --uploads 300 --rounds 3     # soak, prints JSON

While uploads flow through a watched folder into the stack started by ``idwatch up``,
every worker type is killed with SIGKILL and restarted, and Redis, PostgreSQL and the
milvus-lite server are restarted. Afterwards every upload must be terminal, none lost,
no alert duplicated, and the counts must equal a run of the embedded runner on the
same files. The CI test (tests/test_faults.py) runs one short round.

Restarting Redis and PostgreSQL affects everything on this machine that uses them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from benchmarks.common import demo_images, duplicate_alerts, free_port, idwatch, not_terminal
from core.pipeline.identities import register_identity
from core.pipeline.sources.scan import scan
from core.settings import Settings

PROTECTED = "Eileen Collins"


def restart_redis(log_dir: Path) -> None:
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], capture_output=True)
    time.sleep(1)
    start_redis(log_dir)


def start_redis(log_dir: Path) -> None:
    if subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True).returncode:
        os.makedirs("/var/lib/redis", exist_ok=True)
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "-::1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                "/var/lib/redis",
                "--logfile",
                str(log_dir / "redis.log"),
            ],
            check=True,
        )
    for _ in range(50):
        if not subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True
        ).returncode:
            return
        time.sleep(0.2)
    raise RuntimeError("redis did not come back")


def restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for _ in range(100):
        if not subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode:
            return
        time.sleep(0.2)
    raise RuntimeError("postgres did not come back")


def _pid(data_dir: Path, name: str) -> int:
    return int((data_dir / "run" / f"{name}.pid").read_text())


def _restart_proc(env: dict, name: str, argv_expr: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from core.settings import Settings; "
            f"from workers.ops.stack import start; start(Settings(), {name!r}, {argv_expr})",
        ],
        env=env,
        check=True,
        timeout=30,
    )


def _restart_worker(env: dict, q: str) -> None:
    argv = f"__import__('workers.ops.stack').ops.stack.worker_argv([{q!r}])"
    _restart_proc(env, f"worker-{q}", argv)


def _counts(engine) -> dict:
    q = {
        "uploads": "SELECT count(*) FROM uploads",
        "done": "SELECT count(*) FROM uploads WHERE status = 'done'",
        "faces": "SELECT count(*) FROM faces",
        "matches": "SELECT count(*) FROM matches",
        "alerts": "SELECT count(*) FROM alerts",
    }
    with engine.connect() as c:
        return {k: c.execute(text(v)).scalar() for k, v in q.items()}


def _expected(files: list[Path], refs: list[Path], tmp: Path) -> dict:
    from core.services import Services

    svc = Services(Settings(data_dir=tmp / "reference-run", notifier="memory"))
    register_identity(svc, PROTECTED, refs)
    summary = scan(svc, files)
    engine = svc.db.engine
    out = _counts(engine)
    svc.close()
    assert summary.failed == 0
    return out


def run_faults(
    tmp: Path,
    pg_url: str,
    n_uploads: int,
    rounds: int = 1,
    redis_db: int = 13,
    keep_logs: Path | None = None,
) -> dict:
    """Run the scenario; returns counts with and without faults and what was injected."""
    import redis

    files, refs = demo_images(tmp / "imgs", n_uploads)
    t0 = time.monotonic()
    expected = _expected(files, refs[PROTECTED], tmp)
    redis.Redis(db=redis_db).flushdb()
    inbox = tmp / "inbox"
    inbox.mkdir()
    data_dir = tmp / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDWATCH_")}
    env.update(
        {
            "IDWATCH_DATA_DIR": str(data_dir),
            "IDWATCH_DATABASE_URL": pg_url,
            "IDWATCH_BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
            "IDWATCH_MILVUS_URI": f"http://127.0.0.1:{free_port()}",
            "IDWATCH_NOTIFIER": "log",
            "IDWATCH_WATCH_SETTLE_S": "0.3",
            "IDWATCH_TASK_TIME_LIMIT_S": "40",
            "IDWATCH_TASK_SOFT_TIME_LIMIT_S": "35",
            "IDWATCH_VISIBILITY_TIMEOUT_S": "45",
        }
    )
    engine = create_engine(pg_url, pool_pre_ping=True)
    log_dir = tmp / "logs"
    log_dir.mkdir()
    injected: list[str] = []
    try:
        idwatch(env, "up", "--watch", str(inbox), "--sweep-after", "15")
        idwatch(env, "identity", "add", PROTECTED, *map(str, refs[PROTECTED]))
        feed_interval = 0.4

        def feed():
            for i, f in enumerate(files):
                (inbox / f"{i:05d}_{f.name}").write_bytes(f.read_bytes())
                time.sleep(feed_interval)

        feeder = threading.Thread(target=feed)
        feeder.start()
        faults = [
            ("kill -9 crop worker", lambda: _kill_and_restart(env, data_dir, "crop")),
            ("restart Redis", lambda: restart_redis(log_dir)),
            ("kill -9 embed worker", lambda: _kill_and_restart(env, data_dir, "embed")),
            ("restart PostgreSQL", restart_postgres),
            ("restart milvus-lite server", lambda: _restart_milvus(env, data_dir)),
            ("kill -9 index worker", lambda: _kill_and_restart(env, data_dir, "index")),
            ("kill -9 classify worker", lambda: _kill_and_restart(env, data_dir, "classify")),
        ]
        # Spread the rounds of faults over the time the feeder runs.
        gap = max(2.5, n_uploads * feed_interval / (rounds * len(faults) + 1))
        for _ in range(rounds):
            for name, fault in faults:
                time.sleep(gap)
                fault()
                injected.append(name)
        feeder.join()
        deadline = time.monotonic() + 300 + 3 * n_uploads
        while time.monotonic() < deadline:
            try:
                if _counts(engine)["uploads"] >= n_uploads and not_terminal(engine) == 0:
                    break
            except Exception:  # the database may still be coming back
                pass
            time.sleep(1)
        got = _counts(engine)
        dup = duplicate_alerts(engine)
        lost = n_uploads - got["uploads"]
        pending = not_terminal(engine)
        redispatched = sum(
            line.count("re-dispatching upload")
            for line in (data_dir / "logs" / "sweep.log").read_text().splitlines()
        )
        return {
            "uploads": n_uploads,
            "rounds": rounds,
            "faults": injected,
            "with_faults": got,
            "without_faults": expected,
            "equal": got == expected,
            "duplicate_alerts": dup,
            "lost": lost,
            "not_terminal": pending,
            "sweeper_redispatches": redispatched,
            "seconds": round(time.monotonic() - t0, 1),
        }
    finally:
        start_redis(log_dir)  # whatever happened, leave the machine's Redis running
        engine.dispose()
        subprocess.run(
            [sys.executable, "-m", "workers.cli", "down"], env=env, capture_output=True, timeout=120
        )
        if keep_logs:
            shutil.copytree(data_dir / "logs", keep_logs, dirs_exist_ok=True)


def _kill_and_restart(env: dict, data_dir: Path, q: str) -> None:
    pid = _pid(data_dir, f"worker-{q}")
    os.killpg(pid, signal.SIGKILL)
    time.sleep(1)
    # On a loaded machine a killed process can take a moment to be reaped, and the
    # restart refuses to start a second worker under a pid that still answers.
    for _ in range(150):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    _restart_worker(env, q)


def _restart_milvus(env: dict, data_dir: Path) -> None:
    pid = _pid(data_dir, "milvus")
    os.killpg(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    time.sleep(2)
    port = env["IDWATCH_MILVUS_URI"].rsplit(":", 1)[1]
    _restart_proc(
        env,
        "milvus",
        "[str(__import__('pathlib').Path(sys.executable)"
        ".with_name('milvus-lite')), 'server', '--data-dir', "
        f"{str(data_dir / 'milvus')!r}, '--host', '127.0.0.1', "
        f"'--port', {port!r}]",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uploads", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    db = f"idwatch_soak_{uuid.uuid4().hex[:8]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc"]
    subprocess.run([*psql, f"CREATE DATABASE {db}"], check=True, capture_output=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            res = run_faults(
                Path(tmp),
                f"postgresql+psycopg2://postgres@127.0.0.1/{db}",
                args.uploads,
                args.rounds,
            )
    finally:
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
