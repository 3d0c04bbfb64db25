"""Fault injection on the local distributed stack (also the soak run).

    python -m benchmarks.faults --uploads 1000 --kills 12 --out benchmarks/results/faults.json

While uploads flow through a watched folder into the stack that ``idwatch up`` started
(under supervisord), this injects, spread over the run:

- ``--kills`` SIGKILLs of a worker's whole process group, queues picked at random
  (every queue at least once when there are enough kills); supervisord restarts them;
- restarts of Redis, PostgreSQL (both private instances on free ports: the machine's
  shared servers are never touched) and the milvus-lite server;
- the webhook receiver down for ``--receiver-down-s`` (connection refused);
- a protected person registered mid-run (the backfill job) and another, registered
  at the start, erased mid-run (the erasure job).

Afterwards every upload must be terminal, none lost or failed, no alert duplicated,
every alert delivered exactly once by delivery id once the receiver is back, the counts
equal to a fault-free run of the embedded runner on the same files with the same final
set of people, and nothing of the erased person left (identity row, reference rows and
files, vectors, matches, alerts in their name). Prints JSON and writes it to ``--out``.
The CI test (tests/test_faults.py) runs a short version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from benchmarks.common import (
    WebhookReceiver,
    demo_images,
    duplicate_alerts,
    free_port,
    idwatch,
    not_terminal,
)
from benchmarks.private_services import PrivatePostgres, PrivateRedis
from core.flow import FLOW
from core.settings import Settings

PROTECTED = "Eileen Collins"  # registered before the run
LATE = "Tom Hanks"  # registered mid-run: backfill
ERASED = "Person Three"  # registered before the run, erased mid-run
ERASED_REF = "person3.jpg"  # a demo upload: none of the others' faces
SECRET = "faults-webhook-secret"


def _counts(engine) -> dict:
    q = {
        "uploads": "SELECT count(*) FROM uploads",
        "done": "SELECT count(*) FROM uploads WHERE status = 'done'",
        "failed": "SELECT count(*) FROM uploads WHERE status = 'failed'",
        "rejected": "SELECT count(*) FROM uploads WHERE status = 'rejected'",
        "faces": "SELECT count(*) FROM faces",
        "matches": "SELECT count(*) FROM matches",
        # Alerts in a person's name; the erased person's are kept anonymised (erased_at).
        "alerts": "SELECT count(*) FROM alerts WHERE erased_at IS NULL",
    }
    with engine.connect() as c:
        out = {k: c.execute(text(v)).scalar() for k, v in q.items()}
        out["alerts_by_identity"] = dict(
            c.execute(
                text(
                    "SELECT identity_name, count(*) FROM alerts WHERE erased_at IS NULL "
                    "GROUP BY identity_name ORDER BY identity_name"
                )
            ).all()
        )
    return out


def _expected(files: list[Path], refs: dict[str, list[Path]], tmp: Path) -> dict:
    """The fault-free run: the embedded runner, with the people the stack ends with."""
    from core.pipeline.identities import register_identity
    from core.pipeline.sources.scan import scan
    from core.services import Services

    svc = Services(
        Settings(
            data_dir=tmp / "reference-run",
            notifier="memory",
            broker_url=None,
            database_url=None,
            milvus_uri=None,
        )
    )
    register_identity(svc, PROTECTED, refs[PROTECTED])
    register_identity(svc, LATE, refs[LATE])
    summary = scan(svc, files)
    out = _counts(svc.db.engine)
    svc.close()
    assert summary.failed == 0, summary
    return out


class Receivers:
    """The platform's webhook endpoint on a fixed port, taken down and brought back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._old: list[WebhookReceiver] = []
        self.live: WebhookReceiver | None = WebhookReceiver(SECRET, port=self.port)
        self.down_at: float | None = None
        self.back_at: float | None = None

    def outage(self, seconds: float) -> threading.Thread:
        assert self.live is not None
        self.live.close()
        self._old.append(self.live)
        self.live, self.down_at = None, time.monotonic()

        def back() -> None:
            time.sleep(seconds)
            self.live = WebhookReceiver(SECRET, port=self.port)
            self.back_at = time.monotonic()

        t = threading.Thread(target=back, daemon=True)
        t.start()
        return t

    def deliveries(self) -> list[dict]:
        rs = [*self._old, *([self.live] if self.live else [])]
        return [d for r in rs for d in r.deliveries]

    def bad(self) -> int:
        return sum(r.bad for r in [*self._old, *([self.live] if self.live else [])])

    def close(self) -> None:
        if self.live:
            self.live.close()


def _delivery_report(engine, receivers: Receivers) -> dict:
    """Every alert not erased delivered once, by its ``webhook-id`` (alert-<id>-webhook)."""
    with engine.connect() as c:
        alert_ids = set(c.execute(text("SELECT id FROM alerts WHERE erased_at IS NULL")).scalars())
        erased_ids = set(
            c.execute(text("SELECT id FROM alerts WHERE erased_at IS NOT NULL")).scalars()
        )
        pending = c.execute(
            text("SELECT count(*) FROM notifications WHERE status = 'pending'")
        ).scalar()
    got: dict[int, int] = {}
    for d in receivers.deliveries():
        alert_id = int(d["id"].split("-")[1])
        got[alert_id] = got.get(alert_id, 0) + 1
    return {
        "alerts": len(alert_ids),
        "delivered": sum(1 for a in alert_ids if got.get(a)),
        "missing": len([a for a in alert_ids if not got.get(a)]),
        "duplicate_deliveries": sum(n - 1 for n in got.values() if n > 1),
        "erased_alerts": len(erased_ids),
        "erased_delivered_before_erasure": sum(1 for a in erased_ids if got.get(a)),
        "unknown_ids": len([a for a in got if a not in alert_ids | erased_ids]),
        "bad_signatures": receivers.bad(),
        "notifications_pending": pending,
    }


def _leftovers(engine, settings: Settings, identity_id: int) -> dict:
    """What is left of the erased person: must be all zeros / False."""
    from core.storage.vectors import VectorStore

    q = {
        "identity_rows": "SELECT count(*) FROM identities WHERE id = :i",
        "reference_rows": "SELECT count(*) FROM reference_photos WHERE identity_id = :i",
        "matches": "SELECT count(*) FROM matches WHERE identity_id = :i",
        "alerts_in_their_name": "SELECT count(*) FROM alerts WHERE identity_id = :i "
        "OR identity_name = :n",
    }
    with engine.connect() as c:
        out = {
            k: c.execute(text(v), {"i": identity_id, "n": ERASED}).scalar() for k, v in q.items()
        }
        out["erasure_job"] = c.execute(
            text("SELECT status FROM jobs WHERE kind = 'erasure' AND identity_id = :i"),
            {"i": identity_id},
        ).scalar()
    vs = VectorStore(settings.milvus_uri)
    try:
        out["vectors"] = len(vs.reference_ids(identity_id))
    finally:
        vs.close()
    ref_dir = settings.data_dir / "references" / str(identity_id)
    out["files"] = sum(1 for _ in ref_dir.rglob("*")) if ref_dir.exists() else 0
    return out


def _schedule(rng: random.Random, kills: int) -> list[tuple[str, str]]:
    """The faults in order: kills spread between the other events."""
    queues = list(FLOW.queues)
    picks = rng.sample(queues, len(queues)) if kills >= len(queues) else []
    picks += [rng.choice(queues) for _ in range(kills - len(picks))]
    rng.shuffle(picks)
    others = [
        ("receiver", "webhook receiver down"),
        ("register", f"register {LATE}"),
        ("redis", "restart Redis"),
        ("erase", f"erase {ERASED}"),
        ("postgres", "restart PostgreSQL"),
        ("milvus", "restart milvus-lite server"),
    ]
    events: list[tuple[str, str]] = []
    per = max(1, len(picks) // len(others))
    for i, other in enumerate(others):
        events += [("kill", q) for q in picks[i * per : (i + 1) * per]]
        events.append(other)
    events += [("kill", q) for q in picks[len(others) * per :]]
    return events


def run_faults(
    tmp: Path,
    n_uploads: int,
    kills: int = 10,
    receiver_down_s: float = 120.0,
    feed_interval: float = 0.25,
    sweep_after_s: float = 15.0,
    seed: int = 0,
    keep_logs: Path | None = None,
) -> dict:
    """Run the scenario; returns counts with and without faults and what was injected."""
    from workers.ops import supervisor

    rng = random.Random(seed)
    files, refs = demo_images(tmp / "imgs", n_uploads)
    refs = {**refs, ERASED: [tmp / "imgs" / "set" / "uploads" / ERASED_REF]}
    t0 = time.monotonic()
    expected = _expected(files, refs, tmp)
    expected_s = round(time.monotonic() - t0, 1)
    inbox = tmp / "inbox"
    inbox.mkdir()
    data_dir = tmp / "data"
    redis_srv = PrivateRedis(tmp / "redis")
    pg = PrivatePostgres()
    receivers = Receivers()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDWATCH_")}
    engine = None
    injected: list[dict] = []
    threads: list[threading.Thread] = []
    results: dict[str, object] = {}
    t1 = time.monotonic()
    try:
        redis_srv.start()
        pg.start()
        pg_url = pg.create_database("idwatch")
        env.update(
            {
                "IDWATCH_DATA_DIR": str(data_dir),
                "IDWATCH_DATABASE_URL": pg_url,
                "IDWATCH_BROKER_URL": redis_srv.url(0),
                "IDWATCH_MILVUS_URI": f"http://127.0.0.1:{free_port()}",
                "IDWATCH_NOTIFIER": "webhook",
                "IDWATCH_WEBHOOK_URL": receivers.url,
                "IDWATCH_WEBHOOK_SECRET": SECRET,
                "IDWATCH_WATCH_SETTLE_S": "0.3",
                # Shortened so a run ends in minutes; production values in README.
                "IDWATCH_NOTIFY_BACKOFF_MAX_S": "30",
                "IDWATCH_TASK_TIME_LIMIT_S": "60",
                "IDWATCH_TASK_SOFT_TIME_LIMIT_S": "55",
            }
        )
        settings = Settings(
            data_dir=data_dir,
            database_url=pg_url,
            broker_url=env["IDWATCH_BROKER_URL"],
            milvus_uri=env["IDWATCH_MILVUS_URI"],
        )
        idwatch(env, "up", "--watch", str(inbox), "--sweep-after", str(sweep_after_s))
        idwatch(env, "identity", "add", PROTECTED, *map(str, refs[PROTECTED]))
        idwatch(env, "identity", "add", ERASED, *map(str, refs[ERASED]))
        engine = create_engine(pg_url, pool_pre_ping=True)
        with engine.connect() as c:
            erased_id = c.execute(
                text("SELECT id FROM identities WHERE name = :n"), {"n": ERASED}
            ).scalar()

        def feed() -> None:
            for i, f in enumerate(files):
                (inbox / f"{i:05d}_{f.name}").write_bytes(f.read_bytes())
                time.sleep(feed_interval)

        def cli_bg(key: str, *args: str) -> None:
            def go() -> None:
                try:
                    res = idwatch(env, *args, timeout=1800)
                    results[key] = res.stdout.strip()[-300:]
                except Exception as exc:  # recorded; the checks below judge the outcome
                    results[key] = f"error: {exc}"[-600:]

            t = threading.Thread(target=go, daemon=True)
            t.start()
            threads.append(t)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        events = _schedule(rng, kills)
        gap = max(2.5, n_uploads * feed_interval / (len(events) + 1))
        for kind, what in events:
            time.sleep(gap)
            at = round(time.monotonic() - t1, 1)
            if kind == "kill":
                pid = supervisor.pid_of(settings, f"worker-{what}")
                if pid:
                    os.killpg(pid, signal.SIGKILL)
                what = f"kill -9 {what} worker"
            elif kind == "receiver":
                threads.append(receivers.outage(receiver_down_s))
            elif kind == "register":
                cli_bg("register", "identity", "add", LATE, *map(str, refs[LATE]))
            elif kind == "erase":
                cli_bg("erase", "identity", "remove", ERASED, "--yes", "--wait", "1200")
            elif kind == "redis":
                redis_srv.restart()
            elif kind == "postgres":
                pg.restart()
            elif kind == "milvus":
                rpc = supervisor.rpc(settings).supervisor
                rpc.stopProcess("milvus")
                time.sleep(2)
                rpc.startProcess("milvus")
            injected.append({"at_s": at, "fault": what})
        feeder.join()
        fed_s = round(time.monotonic() - t1, 1)
        deadline = time.monotonic() + 600 + 2 * n_uploads
        while time.monotonic() < deadline:
            try:
                if _counts(engine)["uploads"] >= n_uploads and not_terminal(engine) == 0:
                    break
            except Exception:  # the database may still be coming back
                pass
            time.sleep(1)
        terminal_s = round(time.monotonic() - t1, 1)
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()))
        # Deliveries: the receiver is back; retries and the sweeper finish the rest.
        delivery_deadline = time.monotonic() + 900
        while time.monotonic() < delivery_deadline:
            rep = _delivery_report(engine, receivers)
            if rep["missing"] == 0 and rep["notifications_pending"] == 0:
                break
            time.sleep(2)
        delivered_s = round(time.monotonic() - t1, 1)
        got = _counts(engine)
        sweep_log = (data_dir / "logs" / "sweep.log").read_text(errors="replace")
        procs = supervisor.processes(settings)
        deliveries = _delivery_report(engine, receivers)
        leftovers = _leftovers(engine, settings, erased_id)
        return {
            "uploads": n_uploads,
            "cpu_count": os.cpu_count(),
            "kills": sum(1 for f in injected if f["fault"].startswith("kill")),
            "faults": injected,
            "receiver_down_s": receiver_down_s,
            "receiver_back_after_s": (
                round(receivers.back_at - t1, 1) if receivers.back_at else None
            ),
            "with_faults": got,
            "without_faults": expected,
            "equal": got == expected,
            "lost": n_uploads - got["uploads"],
            "not_terminal": not_terminal(engine),
            "failed": got["failed"],
            "duplicate_alerts": duplicate_alerts(engine),
            "deliveries": deliveries,
            "erased_person_left": leftovers,
            "cli": results,
            "sweeper_redispatches": sweep_log.count("re-dispatching upload"),
            "sweeper_notification_redispatches": sweep_log.count("re-dispatching notification"),
            "sweeper_job_redispatches": sweep_log.count("re-dispatching backfill job")
            + sweep_log.count("re-dispatching erasure job"),
            "restarts": {p["name"]: p["restarts"] for p in procs if p["restarts"]},
            "seconds": {
                "fault_free_run": expected_s,
                "feed_and_faults": fed_s,
                "all_terminal": terminal_s,
                "all_delivered": delivered_s,
            },
        }
    finally:
        subprocess.run(
            [sys.executable, "-m", "workers.cli", "down"], env=env, capture_output=True, timeout=180
        )
        if engine is not None:
            engine.dispose()
        receivers.close()
        redis_srv.stop()
        pg.close()
        if keep_logs:
            shutil.copytree(data_dir / "logs", keep_logs, dirs_exist_ok=True)


def check(res: dict) -> list[str]:
    """What the proof requires; an empty list when everything holds."""
    bad = []
    for k in ("lost", "not_terminal", "failed", "duplicate_alerts"):
        if res[k]:
            bad.append(f"{k}={res[k]}")
    if not res["equal"]:
        bad.append("counts differ from the fault-free run")
    d = res["deliveries"]
    if d["missing"] or d["duplicate_deliveries"] or d["bad_signatures"] or d["unknown_ids"]:
        bad.append(f"deliveries: {d}")
    left = res["erased_person_left"]
    if any(v for k, v in left.items() if k != "erasure_job") or left["erasure_job"] != "done":
        bad.append(f"erased person left: {left}")
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uploads", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--receiver-down-s", type=float, default=120.0)
    ap.add_argument("--feed-interval", type=float, default=0.25)
    ap.add_argument("--sweep-after", type=float, default=15.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="Also write the JSON here.")
    ap.add_argument("--keep-logs", type=Path, help="Copy the stack's logs here.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = run_faults(
            Path(tmp),
            args.uploads,
            kills=args.kills,
            receiver_down_s=args.receiver_down_s,
            feed_interval=args.feed_interval,
            sweep_after_s=args.sweep_after,
            seed=args.seed,
            keep_logs=args.keep_logs,
        )
    res["problems"] = check(res)
    text_out = json.dumps(res, indent=1)
    print(text_out)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text_out + "\n")
    sys.exit(1 if res["problems"] else 0)


if __name__ == "__main__":
    main()
