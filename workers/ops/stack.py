"""Start, supervise and stop the local distributed stack on this machine.

``idwatch up`` (using the Redis and PostgreSQL already running) runs the migrations,
then starts supervisord (``workers.ops.supervisor``) with one program per process: a
``milvus-lite server`` when IDWATCH_MILVUS_URI points at this machine and nothing
answers there, one Celery worker per queue of the flow (``core.flow``), the ingest API
(when API keys are set), Flower (when its auth is set), the sweeper and optionally a
folder watcher. supervisord restarts any of them that dies; ``idwatch down`` stops
them all (milvus last) and supervisord with them.

Workers started by hand (``idwatch worker``) are not supervised; each writes a Celery
pid file under ``<data_dir>/run/workers``, so ``idwatch status`` lists the live ones
and ``idwatch down`` stops them too. Logs live under ``<data_dir>/logs``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from core.flow import FLOW
from core.settings import Settings
from workers.ops import supervisor
from workers.ops.supervisor import Program

# supervisord starts by ascending priority and stops by descending: Milvus first up and
# last down (workers flush to it while stopping), the workers before what feeds them.
MILVUS_PRIORITY, WORKER_PRIORITY, FRONT_PRIORITY = 10, 100, 200


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def worker_argv(
    queues: list[str],
    concurrency: int = 1,
    loglevel: str = "INFO",
    name: str | None = None,
    pidfile: Path | None = None,
) -> list[str]:
    """The Celery worker command for some queues, named after them (``crop@host``)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        "-Q",
        ",".join(queues),
        "-n",
        f"{name or '+'.join(queues)}@%h",
        "-c",
        str(concurrency),
        "--loglevel",
        loglevel,
    ]
    if pidfile is not None:
        argv += ["--pidfile", str(pidfile)]
    return argv


def local_milvus(settings: Settings) -> tuple[str, int] | None:
    """(host, port) if the Milvus URI names a server on this machine."""
    uri = settings.milvus_uri or ""
    if not uri.startswith(("http://", "tcp://", "grpc://")):
        return None
    u = urlparse(uri)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    return (u.hostname, u.port or 19530)


def programs(
    settings: Settings,
    watch_dir: Path | None = None,
    concurrency: int = 1,
    sweep_after_s: float = 120.0,
    workers: bool = True,
) -> list[Program]:
    """What ``up`` supervises, from the settings and the flow."""
    py = sys.executable
    out: list[Program] = []
    ml = local_milvus(settings)
    if ml and not port_open(*ml):
        data = settings.data_dir / "milvus"
        data.mkdir(parents=True, exist_ok=True)
        argv = [str(Path(py).with_name("milvus-lite")), "server", "--data-dir", str(data)]
        argv += ["--host", ml[0], "--port", str(ml[1])]
        out.append(Program("milvus", argv, MILVUS_PRIORITY))
    for q in FLOW.queues if workers else ():
        out.append(Program(f"worker-{q}", worker_argv([q], concurrency), WORKER_PRIORITY))
    cli = [py, "-m", "workers.cli"]
    if settings.api_keys:
        out.append(Program("api", [*cli, "api"], FRONT_PRIORITY))
    if settings.flower_basic_auth:
        out.append(Program("flower", [*cli, "flower"], FRONT_PRIORITY))
    # The sweeper re-dispatches work whose messages were lost (Redis restarted, a worker
    # killed whole while holding a task); see core/pipeline/recovery.py.
    every = min(30.0, max(2.0, sweep_after_s / 4))
    sweep = [*cli, "sweep", "--every", str(every), "--older-than", str(sweep_after_s)]
    out.append(Program("sweep", sweep, FRONT_PRIORITY))
    if watch_dir is not None:
        watch = [*cli, "watch", str(watch_dir.absolute())]
        out.append(Program("watch", watch, FRONT_PRIORITY))
    return out


def up(
    settings: Settings,
    watch_dir: Path | None = None,
    concurrency: int = 1,
    sweep_after_s: float = 120.0,
    workers: bool = True,
) -> list[dict]:
    """Migrate, then start supervisord with the stack's programs; returns their state."""
    missing = [
        k
        for k, v in (
            ("IDWATCH_BROKER_URL", settings.broker_url),
            ("IDWATCH_DATABASE_URL", settings.database_url),
            ("IDWATCH_MILVUS_URI", settings.milvus_uri),
        )
        if not v
    ]
    if missing:
        raise RuntimeError("the distributed stack needs " + ", ".join(missing))
    if supervisor.running(settings):
        raise RuntimeError("the stack already runs here; `idwatch down` first")
    from core.storage.db import upgrade

    upgrade(settings.resolved_database_url)  # migrations before any worker starts
    progs = programs(settings, watch_dir, concurrency, sweep_after_s, workers)
    supervisor.start(settings, progs, Path.cwd())
    ml = local_milvus(settings)
    if any(p.name == "milvus" for p in progs) and not wait_port(*ml, timeout=60):
        raise RuntimeError(f"milvus-lite server did not open {ml[0]}:{ml[1]}; see logs")
    return supervisor.processes(settings)


# -- workers started by hand ------------------------------------------------------------


def manual_dir(settings: Settings) -> Path:
    d = supervisor.run_dir(settings) / "workers"
    d.mkdir(parents=True, exist_ok=True)
    return d


def manual_pidfile(settings: Settings, pid: int) -> Path:
    """Where ``idwatch worker`` (running as ``pid``) has Celery keep its pid. The host
    is in the name: a data dir shared by several machines holds other hosts' files."""
    return manual_dir(settings) / f"{socket.gethostname()}.{pid}.pid"


def manual_workers(settings: Settings) -> list[dict]:
    """Live workers started by hand on this host (stale pid files are removed)."""
    out = []
    for pf in sorted(manual_dir(settings).glob(f"{socket.gethostname()}.*.pid")):
        try:
            pid = int(pf.read_text().strip())
        except (OSError, ValueError):
            continue
        argv = _cmdline(pid)
        if argv is None or "celery" not in " ".join(argv):  # dead, or the pid was reused
            with contextlib.suppress(OSError):
                pf.unlink()
            continue
        queues = argv[argv.index("-Q") + 1] if "-Q" in argv else "?"
        out.append({"name": f"worker ({queues})", "state": "RUNNING", "pid": pid, "by": "hand"})
    return out


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a] or None


def _stop_manual(settings: Settings, grace_s: float) -> list[dict]:
    found = manual_workers(settings)
    for w in found:  # warm shutdown: finish the task in hand
        with contextlib.suppress(ProcessLookupError):
            os.kill(w["pid"], signal.SIGTERM)
    end = time.monotonic() + grace_s
    for w in found:
        while _cmdline(w["pid"]) is not None and time.monotonic() < end:
            time.sleep(0.2)
        w["result"] = "stopped"
        if _cmdline(w["pid"]) is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(w["pid"], signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(w["pid"], signal.SIGKILL)
            w["result"] = "killed"
    return found


def processes(settings: Settings) -> list[dict]:
    """Every local process of the stack: supervised programs, then hand-started workers."""
    return [{**p, "by": "supervisord"} for p in supervisor.processes(settings)] + manual_workers(
        settings
    )


def down(settings: Settings, grace_s: float = 20.0) -> list[dict]:
    """Stop hand-started workers, then every supervised program and supervisord."""
    stopped = _stop_manual(settings, grace_s)
    for p in supervisor.stop(settings):
        result = "stopped" if p["state"] == "RUNNING" else p["state"].lower()
        stopped.append({**p, "by": "supervisord", "result": result})
    return stopped
