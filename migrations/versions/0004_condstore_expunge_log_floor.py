"""mailboxes.expunge_log_floor: how far back the change log still holds expunges.

Revision ID: 0004_condstore
Revises: 0003_imapext
Create Date: 2026-11-29

QRESYNC (RFC 7162 3.2.5) reports the UIDs expunged since a client's MODSEQ
from the change log; pruning old expunge rows raises this floor so the
server knows when its answer would be incomplete.  Existing mailboxes start
at 0: nothing was pruned yet.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_condstore"
down_revision: str | None = "0003_imapext"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailboxes") as batch:
        batch.add_column(
            sa.Column("expunge_log_floor", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("mailboxes") as batch:
        batch.drop_column("expunge_log_floor")
