"""Start and stop the local distributed stack on this machine, each process by its pid.

``idwatch up`` starts (using the Redis and PostgreSQL already running): a
``milvus-lite server`` when IDWATCH_MILVUS_URI points at this machine and nothing
answers there, one Celery worker per queue of the flow (``core.flow``), the ingest API
(when API keys are set), Flower (when its auth is set) and optionally a folder watcher.
Pids and logs live under ``<data_dir>/run`` and ``<data_dir>/logs``; ``idwatch down``
stops each recorded pid (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from core.flow import FLOW
from core.settings import Settings


@dataclass
class Proc:
    name: str
    pid: int
    log: Path


def _run_dir(settings: Settings) -> Path:
    d = settings.data_dir / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _log_dir(settings: Settings) -> Path:
    d = settings.data_dir / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d


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


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def start(settings: Settings, name: str, argv: list[str], env: dict | None = None) -> Proc:
    pidfile = _run_dir(settings) / f"{name}.pid"
    if pidfile.exists() and alive(int(pidfile.read_text())):
        raise RuntimeError(f"{name} already runs (pid {pidfile.read_text().strip()})")
    log = _log_dir(settings) / f"{name}.log"
    with open(log, "ab") as fh:
        p = subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # survives the CLI
        )
    pidfile.write_text(str(p.pid))
    return Proc(name, p.pid, log)


def worker_argv(queues: list[str], concurrency: int = 1, loglevel: str = "INFO") -> list[str]:
    """The Celery worker command for some queues, named after them (``crop@host``)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        "-Q",
        ",".join(queues),
        "-n",
        f"{'+'.join(queues)}@%h",
        "-c",
        str(concurrency),
        "--loglevel",
        loglevel,
    ]


def local_milvus(settings: Settings) -> tuple[str, int] | None:
    """(host, port) if the Milvus URI names a server on this machine."""
    uri = settings.milvus_uri or ""
    if not uri.startswith(("http://", "tcp://", "grpc://")):
        return None
    u = urlparse(uri)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    return (u.hostname, u.port or 19530)


def up(
    settings: Settings,
    watch_dir: Path | None = None,
    concurrency: int = 1,
    sweep_after_s: float = 120.0,
    workers: bool = True,
) -> list[Proc]:
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
    from core.storage.db import upgrade

    upgrade(settings.resolved_database_url)  # migrations before any worker starts
    py = sys.executable
    procs: list[Proc] = []
    ml = local_milvus(settings)
    if ml and not port_open(*ml):
        data = settings.data_dir / "milvus"
        data.mkdir(parents=True, exist_ok=True)
        procs.append(
            start(
                settings,
                "milvus",
                [
                    str(Path(py).with_name("milvus-lite")),
                    "server",
                    "--data-dir",
                    str(data),
                    "--host",
                    ml[0],
                    "--port",
                    str(ml[1]),
                ],
            )
        )
        if not wait_port(*ml, timeout=60):
            raise RuntimeError(f"milvus-lite server did not open {ml[0]}:{ml[1]}; see logs")
    for q in FLOW.queues if workers else ():
        procs.append(start(settings, f"worker-{q}", worker_argv([q], concurrency)))
    if settings.api_keys:
        procs.append(start(settings, "api", [py, "-m", "workers.cli", "api"]))
    if settings.flower_basic_auth:
        procs.append(start(settings, "flower", [py, "-m", "workers.cli", "flower"]))
    # The sweeper re-dispatches uploads whose messages were lost (e.g. Redis restarted).
    procs.append(
        start(
            settings,
            "sweep",
            [
                py,
                "-m",
                "workers.cli",
                "sweep",
                "--every",
                str(min(30.0, max(2.0, sweep_after_s / 4))),
                "--older-than",
                str(sweep_after_s),
            ],
        )
    )
    if watch_dir is not None:
        procs.append(start(settings, "watch", [py, "-m", "workers.cli", "watch", str(watch_dir)]))
    return procs


def down(settings: Settings, grace_s: float = 15.0) -> list[tuple[str, int, str]]:
    """Stop every recorded process; returns (name, pid, how it ended)."""
    out = []
    pidfiles = sorted(_run_dir(settings).glob("*.pid"), key=lambda p: p.stem == "milvus")
    for pf in pidfiles:  # milvus last: workers flush to it while stopping
        pid = int(pf.read_text())
        if not alive(pid):
            out.append((pf.stem, pid, "not running"))
            pf.unlink()
            continue
        _signal_group(pid, signal.SIGTERM)
        end = time.monotonic() + grace_s
        while alive(pid) and time.monotonic() < end:
            time.sleep(0.2)
        how = "stopped"
        if alive(pid):
            _signal_group(pid, signal.SIGKILL)
            how = "killed"
        out.append((pf.stem, pid, how))
        pf.unlink()
    return out


def _signal_group(pid: int, sig: int) -> None:
    # Each process was started in its own session: signal its group so a Celery
    # worker's pool children stop with it.
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def recorded(settings: Settings) -> list[tuple[str, int, bool]]:
    return [
        (pf.stem, int(pf.read_text()), alive(int(pf.read_text())))
        for pf in sorted(_run_dir(settings).glob("*.pid"))
    ]
