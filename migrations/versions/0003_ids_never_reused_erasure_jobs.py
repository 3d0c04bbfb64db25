"""ids never reused (SQLite AUTOINCREMENT), identities.erasing_at, jobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 00:20:00

SQLite hands out the largest deleted rowid again unless a table is AUTOINCREMENT, and
ids key vectors, stored files and alerts: an erased person's id given to the next person
registered made her old reference vectors match in his name. On SQLite the tables whose
ids key data elsewhere are rebuilt as AUTOINCREMENT (the copy seeds sqlite_sequence with
the largest id present). PostgreSQL's sequences never go back, so nothing changes there.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("identities", "reference_photos", "uploads", "faces", "matches", "alerts")


def _rebuild_sqlite(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass
    if autoincrement:
        # An identity erased before this migration may have left its id in alerts (and,
        # through the old bug, vectors): never hand that id out again either.
        op.execute(
            "UPDATE sqlite_sequence SET seq = max(seq, "
            "(SELECT coalesce(max(identity_key), 0) FROM alerts)) WHERE name = 'identities'"
        )
        op.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'identities', max(identity_key) "
            "FROM alerts WHERE NOT EXISTS "
            "(SELECT 1 FROM sqlite_sequence WHERE name = 'identities') HAVING count(*) > 0"
        )


def upgrade() -> None:
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("erasing_at", sa.DateTime(timezone=True), nullable=True))
    _rebuild_sqlite(True)
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_identity_id"), ["identity_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_jobs_identity_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_kind"))
    op.drop_table("jobs")
    _rebuild_sqlite(False)
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.drop_column("erasing_at")
