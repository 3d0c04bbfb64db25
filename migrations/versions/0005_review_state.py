"""review state on alerts, review history, review users, review events in notifications

Revision ID: 0005_review
Revises: 0004
Create Date: 2026-12-01 10:00:00

Every alert gets a review state (``new`` for the alerts already there), who set it, when
and a note; ``reviews`` keeps every decision; ``review_users`` holds the reviewers added
from the command line (argon2 hashes). A notification row is now one event about an
alert (``event``: ``alert``, or ``review:<review id>`` for a confirmation sent through
the notifiers), unique per (alert, notifier, event). On SQLite the notifications table
is rebuilt to change its unique constraint; the AUTOINCREMENT counters of alerts and
notifications are carried over so no id is handed out twice.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_review"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_UNIQUE = "uq_notification_alert_notifier"
_NEW_UNIQUE = "uq_notification_alert_notifier_event"


def _sequences() -> dict[str, int]:
    if op.get_bind().dialect.name != "sqlite":
        return {}
    rows = op.get_bind().execute(sa.text("SELECT name, seq FROM sqlite_sequence")).all()
    return {name: seq for name, seq in rows if name in ("alerts", "notifications")}


def _restore(seqs: dict[str, int]) -> None:
    for name, seq in seqs.items():
        op.execute(f"UPDATE sqlite_sequence SET seq = max(seq, {int(seq)}) WHERE name = '{name}'")


def upgrade() -> None:
    seqs = _sequences()
    with op.batch_alter_table(
        "alerts", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(
            sa.Column("review_state", sa.String(length=20), server_default="new", nullable=False)
        )
        batch_op.add_column(sa.Column("reviewed_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("review_note", sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f("ix_alerts_review_state"), ["review_state"], unique=False)
    with op.batch_alter_table(
        "notifications",
        schema=None,
        recreate="always",
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch_op:
        batch_op.add_column(
            sa.Column("event", sa.String(length=40), server_default="alert", nullable=False)
        )
        batch_op.drop_constraint(_OLD_UNIQUE, type_="unique")
        batch_op.create_unique_constraint(_NEW_UNIQUE, ["alert_id", "notifier", "event"])
    _restore(seqs)
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("previous", sa.String(length=20), nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reviews_alert_id"), ["alert_id"], unique=False)
    op.create_table(
        "review_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("review_users")
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reviews_alert_id"))
    op.drop_table("reviews")
    seqs = _sequences()
    # Review events go; the alert events stay (one per alert and notifier, as before).
    op.execute("DELETE FROM notifications WHERE event <> 'alert'")
    with op.batch_alter_table(
        "notifications",
        schema=None,
        recreate="always",
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch_op:
        batch_op.drop_constraint(_NEW_UNIQUE, type_="unique")
        batch_op.create_unique_constraint(_OLD_UNIQUE, ["alert_id", "notifier"])
        batch_op.drop_column("event")
    with op.batch_alter_table(
        "alerts", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_review_state"))
        batch_op.drop_column("review_note")
        batch_op.drop_column("reviewed_at")
        batch_op.drop_column("reviewed_by")
        batch_op.drop_column("review_state")
    _restore(seqs)
