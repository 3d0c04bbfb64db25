"""identities.name_key: names unique ignoring case, spacing and Unicode form

Revision ID: 0006
Revises: 0005_review
Create Date: 2026-11-30 02:00:00

"Leonardo Dicaprio" registered beside "Leonardo DiCaprio" became a second identity
(the same photo twice, every alert twice). The name is kept as given; ``name_key``
(``core.names.name_key``: NFKC, casefold, whitespace collapsed) is what is matched and
what must be unique. Existing rows are backfilled; if two of them share a key the
upgrade stops with a message naming them, because merging two people (references,
alerts) is not a decision a migration can take. On SQLite the table is rebuilt (NOT
NULL); its AUTOINCREMENT counter is carried over so ids are never handed out again.
"""

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.names import name_key

revision: str = "0006"
down_revision: str | None = "0005_review"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "uq_identities_name_key"


class NameCollision(RuntimeError):
    """Existing identities whose names differ only in case, spacing or Unicode form."""


def _sequence() -> int | None:
    if op.get_bind().dialect.name != "sqlite":
        return None
    return (
        op.get_bind()
        .execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'identities'"))
        .scalar()
    )


def _restore_sequence(seq: int | None) -> None:
    if seq is not None:
        op.execute(
            f"UPDATE sqlite_sequence SET seq = max(seq, {int(seq)}) WHERE name = 'identities'"
        )


def _keys() -> dict[int, str]:
    """name_key per identity id; NameCollision if two existing names share one."""
    rows = op.get_bind().execute(sa.text("SELECT id, name FROM identities ORDER BY id")).all()
    by_key: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for ident_id, name in rows:
        by_key[name_key(name)].append((ident_id, name))
    clashes = {k: v for k, v in by_key.items() if len(v) > 1}
    if clashes:
        lines = "; ".join(
            " and ".join(f"{n!r} (id {i})" for i, n in v) + f" match as {k!r}"
            for k, v in clashes.items()
        )
        raise NameCollision(
            f"identity names that differ only in case or spacing: {lines}. They would be one "
            "person from now on: erase the one registered by mistake (`idwatch identity "
            "remove NAME`, or its id) and run the migration again"
        )
    return {v[0][0]: k for k, v in by_key.items()}


def upgrade() -> None:
    keys = _keys()
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_key", sa.String(length=200), nullable=True))
    table = sa.table("identities", sa.column("id", sa.Integer), sa.column("name_key", sa.String))
    for ident_id, key in keys.items():
        op.execute(table.update().where(table.c.id == ident_id).values(name_key=key))
    seq = _sequence()
    with op.batch_alter_table(
        "identities", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.alter_column("name_key", existing_type=sa.String(length=200), nullable=False)
        batch_op.create_unique_constraint(CONSTRAINT, ["name_key"])
    _restore_sequence(seq)


def downgrade() -> None:
    seq = _sequence()
    with op.batch_alter_table(
        "identities", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint(CONSTRAINT, type_="unique")
        batch_op.drop_column("name_key")
    _restore_sequence(seq)
