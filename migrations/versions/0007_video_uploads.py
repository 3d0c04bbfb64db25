"""video uploads: media kind, probe and progress on uploads; time, segment and track on
faces; track on matches; moment and track on alerts; video_segments

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00

Columns are added (nullable, or with a server default), so existing rows read as images.
On SQLite dropping a column rebuilds the table; the rebuild keeps AUTOINCREMENT and the
id counter, so ids are never handed out again (see 0003).

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS: dict[str, list[sa.Column]] = {
    "uploads": [
        sa.Column("media_kind", sa.String(length=10), server_default="image", nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("video", sa.JSON(), nullable=True),
        sa.Column("segments_total", sa.Integer(), nullable=True),
        sa.Column("segments_done", sa.Integer(), nullable=True),
    ],
    "faces": [
        sa.Column("frame_time_s", sa.Float(), nullable=True),
        sa.Column("segment", sa.Integer(), nullable=True),
        sa.Column("scene_cut", sa.Boolean(), nullable=True),
        sa.Column("track_id", sa.Integer(), nullable=True),
    ],
    "matches": [sa.Column("track_id", sa.Integer(), nullable=True)],
    "alerts": [
        sa.Column("frame_time_s", sa.Float(), nullable=True),
        sa.Column("track_id", sa.Integer(), nullable=True),
    ],
}


def _sqlite_sequence(table: str) -> int | None:
    if op.get_bind().dialect.name != "sqlite":
        return None
    return (
        op.get_bind()
        .execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table})
        .scalar()
    )


def upgrade() -> None:
    for table, columns in COLUMNS.items():
        for column in columns:
            op.add_column(table, column)  # no rebuild: SQLite adds columns in place
    op.create_table(
        "video_segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("end_s", sa.Float(), nullable=True),
        sa.Column("max_frames", sa.Integer(), nullable=False),
        sa.Column("fps", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("faces", sa.Integer(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=True),
        sa.Column("cuts", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["upload_id"], ["uploads.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("upload_id", "idx", name="uq_video_segment_upload_idx"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("video_segments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_video_segments_upload_id"), ["upload_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("video_segments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_video_segments_upload_id"))
    op.drop_table("video_segments")
    for table, columns in reversed(COLUMNS.items()):
        seq = _sqlite_sequence(table)
        with op.batch_alter_table(
            table, schema=None, table_kwargs={"sqlite_autoincrement": True}
        ) as batch_op:
            for column in reversed(columns):
                batch_op.drop_column(column.name)
        if seq is not None:
            op.execute(
                sa.text("UPDATE sqlite_sequence SET seq = max(seq, :s) WHERE name = :t").bindparams(
                    s=int(seq), t=table
                )
            )
