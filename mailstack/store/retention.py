"""Capture-mode retention (added by the WebSocket/capture work): expunge the
oldest messages of a mailbox beyond a count and before a time, through the
same expunge path IMAP uses (change log, quota counters, orphan contents)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailstack.store import transactions as tx
from mailstack.store.models import Message


def prune_mailbox(
    session: Session, mailbox_id: int, keep: int | None, older_than: datetime | None
) -> list[int]:
    # Lock in the order every writer uses (account, then mailbox) before
    # touching message rows.
    tx._lock_account(session, tx._mailbox_account(session, mailbox_id))
    tx._lock_mailbox(session, mailbox_id)
    doomed: set[int] = set()
    if keep is not None:
        # Everything but the newest `keep` (UIDs grow with arrival).
        newest = select(Message.uid).where(Message.mailbox_id == mailbox_id)
        newest = newest.order_by(Message.uid.desc()).offset(keep)
        doomed.update(session.scalars(newest))
    if older_than is not None:
        old = select(Message.uid).where(
            Message.mailbox_id == mailbox_id, Message.internal_date < older_than.astimezone(UTC)
        )
        doomed.update(session.scalars(old))
    if not doomed:
        return []
    uids = sorted(doomed)
    for chunk in tx._chunks(uids):
        session.execute(
            update(Message)
            .where(Message.mailbox_id == mailbox_id, Message.uid.in_(chunk))
            .values(deleted=True)
        )
    return tx.expunge(session, mailbox_id, uids)
