"""Sync read units for the WebSocket API (added by the WebSocket work): one
page of a mailbox by UID, so listing a large capture inbox never loads it
whole.  Kept apart from transactions.py like imap_reads.py."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailstack.store import transactions as tx
from mailstack.store.models import Message
from mailstack.store.records import MessageRecord


def messages_page(
    session: Session, mailbox_id: int, after_uid: int, limit: int
) -> list[MessageRecord]:
    messages = session.scalars(
        select(Message)
        .where(Message.mailbox_id == mailbox_id, Message.uid > after_uid)
        .order_by(Message.uid)
        .limit(limit)
    )
    return [tx._message_record(m) for m in messages]
