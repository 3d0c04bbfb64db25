"""Where the data lives: the data dir, database, vector store and broker one Settings
object points at, shown without passwords, and whether a store is already there.

Every command that touches the store says where it is (a mistyped ``IDWATCH_DATA_DIR``
must not look like an empty system), and commands that only read refuse to create one
(``StoreMissing``) instead of making an empty store and reporting zeros.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from core.settings import Settings

DB_FILE = "idwatch.db"


class StoreMissing(RuntimeError):
    """A read-only command was pointed at a place that holds no identity-watch store."""


def redact_url(url: str | None) -> str | None:
    """``url`` without its password (SQLAlchemy, Redis, AMQP, HTTP URLs alike)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # not a URL we can take apart: show nothing of it
        return "<unparsable URL>"


@dataclass(frozen=True)
class StoreLocation:
    data_dir: str  # absolute
    database: str  # URL, password hidden
    vectors: str  # milvus-lite file or server URI
    broker: str | None  # Celery broker, password hidden; None: in-process
    mode: str  # embedded | distributed

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One line for the top of a command's output."""
        if self.mode == "embedded" and self.database.endswith(f"{self.data_dir}/{DB_FILE}"):
            return f"store: {self.data_dir}"
        return f"store: {self.data_dir} (database {self.database}, vectors {self.vectors})"


def locate(settings: Settings) -> StoreLocation:
    return StoreLocation(
        data_dir=str(Path(settings.data_dir).absolute()),
        database=redact_url(settings.resolved_database_url) or "",
        vectors=settings.resolved_milvus_uri,
        broker=redact_url(settings.broker_url),
        mode="embedded" if settings.embedded else "distributed",
    )


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    return Path(u.database) if u.database and u.database != ":memory:" else None


def store_exists(settings: Settings) -> bool:
    """Is there a store here? SQLite: the database file exists. A server: the database
    answers and holds the schema (Alembic's version table). Connection errors are not
    caught: they are configuration errors and are reported as such."""
    url = settings.resolved_database_url
    path = _sqlite_file(url)
    if path is not None:
        return path.is_file()
    if url.startswith("sqlite"):
        return True  # in-memory: nothing to find, nothing to spoil
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            return inspect(conn).has_table("alembic_version")
    finally:
        engine.dispose()


def require_store(settings: Settings) -> StoreLocation:
    """The location, or StoreMissing saying where nothing was found and what to set."""
    loc = locate(settings)
    if store_exists(settings):
        return loc
    if _sqlite_file(settings.resolved_database_url) is not None and not settings.database_url:
        raise StoreMissing(
            f"no identity-watch store at {loc.data_dir} (set IDWATCH_DATA_DIR or --data-dir)"
        )
    raise StoreMissing(
        f"no identity-watch store in the database {loc.database} (check "
        "IDWATCH_DATABASE_URL, or create the schema with `idwatch migrate`)"
    )
