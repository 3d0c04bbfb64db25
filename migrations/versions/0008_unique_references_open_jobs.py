"""unique keys for inserts that race: a reference photo once per person, one unfinished
job per kind and person

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:00:00

Registration stored a reference unless its SHA-256 was already among the person's, and
opened a job unless one was unfinished: look-ups that two registrations running at once
both pass. The database now decides (``INSERT ... ON CONFLICT DO NOTHING``,
``core.storage.inserts``), which needs these unique indexes. Rows such a race may have
left are folded first: a duplicate reference row (same person, same file, same stored
path) is deleted, keeping the first; of several unfinished jobs of one kind and person
the first stays open (pending, so the sweeper runs it: a backfill or erasure run covers
every reference of the person) and the others are closed as merged into it. Unique
indexes, not constraints, so SQLite needs no table rebuild.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFS_INDEX = "uq_reference_photos_identity_sha256"
JOBS_INDEX = "uq_jobs_open_kind_identity"
OPEN = sa.text("status != 'done'")


def _fold_duplicates() -> None:
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "DELETE FROM reference_photos WHERE id NOT IN "
            "(SELECT min(id) FROM reference_photos GROUP BY identity_id, sha256)"
        )
    )
    rows = bind.execute(
        sa.text("SELECT id, kind, identity_id FROM jobs WHERE status != 'done' ORDER BY id")
    ).all()
    first: dict[tuple[str, int], int] = {}
    now = datetime.now(UTC)
    for job_id, kind, identity_id in rows:
        keep = first.setdefault((kind, identity_id), job_id)
        if keep == job_id:
            continue
        bind.execute(
            sa.text(
                "UPDATE jobs SET status = 'done', finished_at = :now, error = :why WHERE id = :id"
            ),
            {"now": now, "why": f"merged into job {keep} (migration 0008)", "id": job_id},
        )
        bind.execute(
            sa.text("UPDATE jobs SET status = 'pending', updated_at = :now WHERE id = :id"),
            {"now": now, "id": keep},
        )


def upgrade() -> None:
    _fold_duplicates()
    op.create_index(REFS_INDEX, "reference_photos", ["identity_id", "sha256"], unique=True)
    op.create_index(
        JOBS_INDEX,
        "jobs",
        ["kind", "identity_id"],
        unique=True,
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )


def downgrade() -> None:
    op.drop_index(JOBS_INDEX, table_name="jobs")
    op.drop_index(REFS_INDEX, table_name="reference_photos")
