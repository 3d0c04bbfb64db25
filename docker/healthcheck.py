"""Container health probe (the Dockerfile's HEALTHCHECK), one script for every service.

All services share one image, so the probe finds out what this container runs from the
process table: ``idwatch api`` is probed on ``/healthz`` (200 only after a database
query succeeded, so never before the entrypoint's migrations finished: compose's
``depends_on: condition: service_healthy`` on the api waits for exactly that),
``idwatch flower`` on Flower's unauthenticated ``/healthcheck``. Workers and the watcher
have no port and are healthy while their process runs (Docker restarts them on exit).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

API_HEALTH_PATH = "/healthz"  # workers.api: open path, 503 when the database fails
GLOBAL_OPTIONS_WITH_VALUE = {"--data-dir"}  # idwatch's callback options that take a value


def subcommand(argv: Sequence[str]) -> str | None:
    """The idwatch (or celery) subcommand in a process's argv, e.g. ``api``; else None."""
    for i, token in enumerate(argv):
        if Path(token).name not in ("idwatch", "celery"):
            continue
        rest = list(argv[i + 1 :])
        while rest:
            tok = rest.pop(0)
            if tok in GLOBAL_OPTIONS_WITH_VALUE or tok in ("-A", "--app", "-b", "--broker"):
                if rest:
                    rest.pop(0)
            elif not tok.startswith("-"):
                return tok
        return None
    return None


def option_value(argv: Sequence[str], name: str) -> str | None:
    """Value of ``--name X`` or ``--name=X`` in argv (the last one wins, as in click)."""
    value = None
    for i, tok in enumerate(argv):
        if tok == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif tok.startswith(name + "="):
            value = tok.split("=", 1)[1]
    return value


def probe_url(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The URL to probe for a process, or None when it serves no HTTP."""
    sub = subcommand(argv)
    if sub == "api":
        port = env.get("IDWATCH_API_PORT") or "8000"
        return f"http://127.0.0.1:{port}{API_HEALTH_PATH}"
    if sub == "flower":
        port = option_value(argv, "--port") or env.get("IDWATCH_FLOWER_PORT") or "5555"
        return f"http://127.0.0.1:{port}/healthcheck"
    return None


def check(url: str, timeout: float = 4.0) -> bool:
    """True when the server answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local URL
            return resp.status == 200
    except (urllib.error.URLError, OSError):  # HTTPError (4xx/5xx) is a URLError
        return False


def process_argvs(proc: Path = Path("/proc")) -> list[list[str]]:
    """argv of every process in this container, lowest pid first (the main process)."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile, or not ours to read
        if raw:
            found.append((int(entry.name), raw.rstrip(b"\0").decode(errors="replace").split("\0")))
    return [argv for _, argv in sorted(found)]


def main() -> int:
    for argv in process_argvs():
        if subcommand(argv) is not None:
            url = probe_url(argv, os.environ)
            if url is None:
                return 0
            ok = check(url)
            if not ok:
                print(f"healthcheck: no answer from {url}", file=sys.stderr)
            return 0 if ok else 1
    return 0  # nothing of ours found (e.g. `idwatch --help`): nothing to probe


if __name__ == "__main__":
    sys.exit(main())
