"""Inserts that may race, made idempotent by the database itself.

Two workers can insert the same row at once: a backfill and an index stage the same
match, two registrations the same person, two runs of one job. A check-then-insert lets
both pass the check, and the second insert then fails with ``IntegrityError`` (failing
its upload, or rolling back a whole backfill). ``insert_missing`` leaves the decision to
the unique key: ``INSERT ... ON CONFLICT DO NOTHING``, on PostgreSQL and SQLite alike. On
PostgreSQL the second insert waits for the first one's transaction: if that commits, the
second does nothing; if it rolls back, the second inserts, so the row is never lost to a
transaction that did not happen.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.storage.models import Base

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def insert_missing(s: Session, model: type[Base], **values: Any) -> int | None:
    """Insert one row unless it would break a unique key (or index) of ``model``'s table.
    Returns the new row's id, or None when an equal row exists (or is being inserted by
    a transaction that then commits)."""
    dialect = s.get_bind().dialect.name
    make = _INSERTS.get(dialect)
    if make is None:  # the project runs on these two (README: embedded vs distributed)
        raise NotImplementedError(f"no ON CONFLICT insert for the {dialect} dialect")
    stmt = make(model).values(**values).on_conflict_do_nothing().returning(model.id)
    return s.execute(stmt).scalar_one_or_none()
