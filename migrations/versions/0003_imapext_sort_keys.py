"""messages.sort_keys: SORT and THREAD keys derived at delivery.

Revision ID: 0003_imapext
Revises: 0002_pg
Create Date: 2026-11-29

Messages stored before this revision keep NULL; IMAP derives their keys
from the stored headers and ENVELOPE when it needs them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_imapext"
down_revision: str | None = "0002_pg"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("sort_keys", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("sort_keys")
