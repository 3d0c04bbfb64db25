#!/usr/bin/env bash
# Container entrypoint for every identity-watch process.
#
# 1. Waits until the servers the settings point at accept connections: PostgreSQL
#    (IDWATCH_DATABASE_URL) and Redis (IDWATCH_BROKER_URL). Compose's depends_on already
#    orders start-up; this also covers restarts and orchestrators without it. Bounded by
#    IDWATCH_WAIT_TIMEOUT_S (default 60; 0 skips waiting). Unset URLs (embedded mode)
#    and non-PostgreSQL/Redis URLs are not waited for.
# 2. Runs `idwatch migrate` when IDWATCH_MIGRATE_ON_START=1 (default 0: in compose only
#    the api migrates, so several containers never race on the schema).
# 3. exec's the command, so it is the container's main process and receives signals.
set -euo pipefail

log() { echo "entrypoint: $*" >&2; }

if [ "${IDWATCH_WAIT_TIMEOUT_S:-60}" != "0" ]; then
  # python (psycopg2, redis, SQLAlchemy's URL parser are installed with the project)
  # instead of extra tools such as pg_isready or nc in the image.
  python - <<'PY'
import os
import sys
import time
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

deadline = time.monotonic() + float(os.environ.get("IDWATCH_WAIT_TIMEOUT_S", "60"))


def postgres(url):
    u = make_url(url)
    if not u.drivername.startswith("postgresql"):
        return None  # SQLite and others: nothing to wait for
    host, port = u.host or "localhost", u.port or 5432

    def check():
        import psycopg2

        psycopg2.connect(
            host=host, port=port, user=u.username, password=u.password,
            dbname=u.database, connect_timeout=3,
        ).close()

    return f"PostgreSQL at {host}:{port}", check


def redis_broker(url):
    if not url.startswith(("redis://", "rediss://")):
        return None

    def check():
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()

    u = urlsplit(url)  # name host and port only: never print the password
    return f"Redis at {u.hostname}:{u.port or 6379}", check


targets = []
for var, probe in (("IDWATCH_DATABASE_URL", postgres), ("IDWATCH_BROKER_URL", redis_broker)):
    url = os.environ.get(var)
    target = probe(url) if url else None
    if target:
        targets.append(target)

for name, check in targets:
    attempt = 0
    while True:
        attempt += 1
        try:
            check()
            break
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            lines = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {lines[0] if lines else ''}"
        if time.monotonic() >= deadline:
            print(f"entrypoint: gave up waiting for {name} ({error})", file=sys.stderr)
            sys.exit(1)
        if attempt == 1 or attempt % 10 == 0:
            print(f"entrypoint: waiting for {name} ({error})", file=sys.stderr)
        time.sleep(1)
    print(f"entrypoint: {name} is up", file=sys.stderr)
PY
fi

if [ "${IDWATCH_MIGRATE_ON_START:-0}" = "1" ]; then
  log "idwatch migrate"
  idwatch migrate
fi

if [ "$#" -eq 0 ]; then
  set -- idwatch --help
fi
exec "$@"
