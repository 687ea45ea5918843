"""Sync read units for callers that fetch many messages at once (POP3
read-ahead).  Kept apart from transactions.py so the POP3 work touches the
store in one small, separate place."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailstack.store.models import MessageContent

# Bound on the ids in one IN (...) list (SQLite's default variable limit is
# far above; PostgreSQL has none that matters).
CHUNK = 500


def read_contents(session: Session, content_ids: Sequence[int]) -> dict[int, bytes]:
    wanted = sorted(set(content_ids))
    found: dict[int, bytes] = {}
    for start in range(0, len(wanted), CHUNK):
        rows = session.execute(
            select(MessageContent.id, MessageContent.data).where(
                MessageContent.id.in_(wanted[start : start + CHUNK])
            )
        )
        for content_id, data in rows:
            found[content_id] = data
    return found
