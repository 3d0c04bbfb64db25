"""notifications: one row per (alert, notifier), delivered by the notify stage

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 01:00:00

Delivery moved out of classify onto its own queue: each (alert, notifier) pair is a row
that the notify task delivers exactly once (the unique pair) and claims while sending
(``claimed_at``), so the per-alert claim column on ``alerts`` goes. On SQLite dropping a
column rebuilds the table; the AUTOINCREMENT counter is carried over so alert ids are
never handed out again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _alerts_sequence() -> int | None:
    if op.get_bind().dialect.name != "sqlite":
        return None
    return (
        op.get_bind()
        .execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'alerts'"))
        .scalar()
    )


def _restore_alerts_sequence(seq: int | None) -> None:
    if seq is not None:
        op.execute(f"UPDATE sqlite_sequence SET seq = max(seq, {int(seq)}) WHERE name = 'alerts'")


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("notifier", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("alert_id", "notifier", name="uq_notification_alert_notifier"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notifications_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_notifications_status"), ["status"], unique=False)
    seq = _alerts_sequence()
    with op.batch_alter_table(
        "alerts", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_column("notify_claimed_at")
    _restore_alerts_sequence(seq)


def downgrade() -> None:
    seq = _alerts_sequence()
    with op.batch_alter_table(
        "alerts", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(
            sa.Column("notify_claimed_at", sa.DateTime(timezone=True), nullable=True)
        )
    _restore_alerts_sequence(seq)
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_status"))
        batch_op.drop_index(batch_op.f("ix_notifications_alert_id"))
    op.drop_table("notifications")
