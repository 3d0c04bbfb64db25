"""Private Redis and PostgreSQL servers for the fault benchmark, on free ports under a
temp dir, so restarting them never touches the machine's shared 6379 / 5432 servers
that other work relies on."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import free_port


def _wait(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up in {timeout:.0f} s")


class PrivateRedis:
    """``redis-server`` on a free port, keeping nothing on disk (as the shared one):
    a restart loses every queued message, which is what the sweeper must survive."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )

    def up(self) -> bool:
        try:
            return self._cli("ping").stdout.strip() == "PONG"
        except subprocess.TimeoutExpired:
            return False

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--pidfile",
                str(self.root / "redis.pid"),
                "--logfile",
                str(self.root / "redis.log"),
            ],  # fmt: skip
            check=True,
            capture_output=True,
        )
        _wait(self.up, 20, "private redis")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._cli("shutdown", "nosave")
        end = time.monotonic() + 10
        while self.up() and time.monotonic() < end:
            time.sleep(0.2)

    def restart(self) -> None:
        self.stop()
        time.sleep(1)
        self.start()


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(f"{name} not found (PostgreSQL server binaries)")
    return found


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (``initdb``, trust auth) on a free port. As root it
    runs as the ``postgres`` user (PostgreSQL refuses root), in a dir that user owns."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="idwatch-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db}"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        res = subprocess.run(
            [*self._as, *argv], capture_output=True, text=True, timeout=timeout, cwd="/"
        )
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {res.stdout}{res.stderr}")

    def _ctl(self, *args: str) -> None:
        opts = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"),
            "-o", opts, "-w", "-t", "60", *args,
        )  # fmt: skip

    def up(self) -> bool:
        res = subprocess.run(
            [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            capture_output=True,
        )
        return res.returncode == 0

    def start(self) -> None:
        if not self.data.exists():
            self._run(
                _pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "--no-sync", "-E", "UTF8",
            )  # fmt: skip
        self._ctl("start")
        _wait(self.up, 60, "private postgres")

    def create_database(self, name: str) -> str:
        self._run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-d", "postgres", "-qc", f"CREATE DATABASE {name}",
        )  # fmt: skip
        return self.url(name)

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")
        _wait(self.up, 60, "private postgres")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ctl("-m", "immediate", "stop")
        shutil.rmtree(self.base, ignore_errors=True)
