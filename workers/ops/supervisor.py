"""supervisord as the one daemon of the local stack: its config, start, state, stop.

``idwatch up`` writes ``<data_dir>/run/supervisord.conf`` (one ``[program]`` per process)
and starts supervisord on it; supervisord starts the programs, restarts one that dies
and stops them all on ``idwatch down``. We only talk to it over its XML-RPC socket
(``<data_dir>/run/supervisor.sock``, mode 0700), as ``supervisorctl`` does.

Restart policy (supervisor's own): a process that exits is started again at once
(``autorestart``); one that dies again within ``startsecs`` of its start is retried
with a growing delay (1 s, 2 s, 3 s ...) up to ``startretries`` times, then left
``FATAL`` (a broken configuration, shown by ``idwatch status``, not a busy loop).
supervisord counts no restarts, so ``restarts`` reads its log: every ``spawned:`` line
of a program since this supervisord started, less the first.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings

# Seconds a program must stay up to count as started; one that dies sooner is retried
# with backoff. A Celery worker's main process is up within 1-2 s (models load in its
# pool children, after that).
START_SECS = 3
START_RETRIES = 10  # backoff 1 + 2 + ... + 10 s = 55 s before a program is left FATAL
STOP_WAIT_SECS = 20  # a worker's warm shutdown finishes its task; then SIGKILL


@dataclass
class Program:
    name: str
    argv: list[str]
    priority: int = 100  # started in ascending, stopped in descending order


def run_dir(settings: Settings) -> Path:
    d = settings.data_dir / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def log_dir(settings: Settings) -> Path:
    d = settings.data_dir / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _paths(settings: Settings) -> dict[str, Path]:
    run, logs = run_dir(settings), log_dir(settings)
    return {
        "conf": run / "supervisord.conf",
        "sock": run / "supervisor.sock",
        "pid": run / "supervisord.pid",
        "log": logs / "supervisord.log",
        "logs": logs,
    }


def _quote(value: str) -> str:
    # supervisord expands %(name)s in its config: a literal % is written %%.
    return value.replace("%", "%%")


def write_config(settings: Settings, programs: list[Program], workdir: Path) -> Path:
    p = _paths(settings)
    lines = [
        "; written by `idwatch up`; rewritten on every start",
        "[unix_http_server]",
        f"file={_quote(str(p['sock']))}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={_quote(str(p['log']))}",
        "logfile_maxbytes=10MB",
        f"pidfile={_quote(str(p['pid']))}",
        f"childlogdir={_quote(str(p['logs']))}",
        "nodaemon=false",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_quote(str(p['sock']))}",
    ]
    for prog in programs:
        lines += [
            "",
            f"[program:{prog.name}]",
            f"command={_quote(shlex.join(prog.argv))}",
            f"directory={_quote(str(workdir))}",
            f"priority={prog.priority}",
            "autostart=true",
            "autorestart=true",
            f"startsecs={START_SECS}",
            f"startretries={START_RETRIES}",
            "stopsignal=TERM",
            f"stopwaitsecs={STOP_WAIT_SECS}",
            # Signal the whole process group: a Celery worker's pool children go with it.
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_quote(str(p['logs'] / f'{prog.name}.log'))}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
            # Programs inherit supervisord's environment (that of `idwatch up`).
            'environment=PYTHONUNBUFFERED="1"',
        ]
    p["conf"].write_text("\n".join(lines) + "\n")
    return p["conf"]


def rpc(settings: Settings) -> xmlrpc.client.ServerProxy:
    """The supervisord XML-RPC interface over its unix socket (as supervisorctl uses)."""
    from supervisor.xmlrpc import SupervisorTransport

    sock = _paths(settings)["sock"]
    transport = SupervisorTransport(None, None, f"unix://{sock}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def running(settings: Settings) -> bool:
    if not _paths(settings)["sock"].exists():
        return False
    try:
        return rpc(settings).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Error):
        return False


def start(settings: Settings, programs: list[Program], workdir: Path) -> None:
    """Write the config and start supervisord (it daemonizes and starts the programs)."""
    if running(settings):
        raise RuntimeError(
            f"the stack already runs (supervisord at {_paths(settings)['sock']}); "
            "`idwatch down` first"
        )
    conf = write_config(settings, programs, workdir)
    res = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if res.returncode != 0:
        raise RuntimeError(f"supervisord did not start: {res.stdout}{res.stderr}".strip())
    end = time.monotonic() + 30
    while not running(settings):
        if time.monotonic() > end:
            raise RuntimeError(f"supervisord did not answer; see {_paths(settings)['log']}")
        time.sleep(0.2)


def processes(settings: Settings) -> list[dict]:
    """Each supervised program: name, state, pid, uptime or error, restarts."""
    if not running(settings):
        return []
    infos = rpc(settings).supervisor.getAllProcessInfo()
    spawns = spawn_counts(_paths(settings)["log"])
    return [
        {
            "name": i["name"],
            "state": i["statename"],
            "pid": i["pid"] or None,
            "detail": i["description"],
            "restarts": max(0, spawns.get(i["name"], 0) - 1),
        }
        for i in infos
    ]


_SPAWNED = re.compile(r"spawned: '([^']+)' with pid \d+")
_STARTED = "supervisord started with pid"


def spawn_counts(log: Path) -> dict[str, int]:
    """Program name -> times supervisord spawned it since it last started (its log)."""
    counts: dict[str, int] = {}
    if not log.exists():
        return counts
    with open(log, errors="replace") as fh:
        for line in fh:
            if _STARTED in line:
                counts = {}  # an earlier supervisord's lines
                continue
            m = _SPAWNED.search(line)
            if m:
                counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def pid_of(settings: Settings, name: str) -> int | None:
    """The pid of a supervised program now (None when it is not running)."""
    return rpc(settings).supervisor.getProcessInfo(name)["pid"] or None


def stop(settings: Settings, timeout: float = STOP_WAIT_SECS + 40) -> list[dict]:
    """Stop every program (descending priority: milvus last) and supervisord; returns
    each program's state before. supervisord waits ``STOP_WAIT_SECS`` for a program,
    then kills its process group."""
    if not running(settings):
        return []
    before = processes(settings)
    pidfile = _paths(settings)["pid"]
    pid = int(pidfile.read_text()) if pidfile.exists() else None
    with contextlib.suppress(OSError, xmlrpc.client.Error):
        rpc(settings).supervisor.shutdown()
    end = time.monotonic() + timeout
    while pid and _alive(pid) and time.monotonic() < end:
        time.sleep(0.2)
    return before


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
