"""POP3 maildrop locks shared by every host; change-log NOTIFY on PostgreSQL.

``maildrop_locks``: one row per locked maildrop (RFC 1939 8), with the
holding process and an expiry it keeps renewing, so a session on one host
excludes sessions on every other host, and a host that dies leaves the lock
to expire instead of holding it forever.

PostgreSQL only: a statement trigger on ``change_log`` sends NOTIFY in the
transaction that wrote the changes (delivered when it commits), so the
change watchers of other hosts wake without polling (store/notifications.py).

Revision ID: 0002_pg
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_pg"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Keep in step with mailstack/store/notifications.py CHANNEL.
NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION mailstack_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The payload names the schema, so installations sharing one database
    -- in different schemas only wake their own watchers.
    PERFORM pg_notify('mailstack_changes', current_schema());
    RETURN NULL;
END
$$
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER change_log_notify AFTER INSERT ON change_log
FOR EACH STATEMENT EXECUTE FUNCTION mailstack_notify_change()
"""


def upgrade() -> None:
    op.create_table(
        "maildrop_locks",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_maildrop_locks_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_maildrop_locks")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS change_log_notify ON change_log")
        op.execute("DROP FUNCTION IF EXISTS mailstack_notify_change()")
    op.drop_table("maildrop_locks")
