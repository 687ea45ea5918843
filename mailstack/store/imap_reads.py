"""Sync read units for IMAP (added by the IMAP work): a few messages by UID
without listing the mailbox, and the light (UID, flags) list that SELECT
keeps per session.  Kept apart from transactions.py so the IMAP work touches
the store in one small, separate place."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailstack.store import names
from mailstack.store import transactions as tx
from mailstack.store.models import Message
from mailstack.store.records import MessageRecord


def messages_by_uid(session: Session, mailbox_id: int, uids: Sequence[int]) -> list[MessageRecord]:
    return [tx._message_record(m) for m in tx._messages_by_uid(session, mailbox_id, uids)]


def uid_flags(session: Session, mailbox_id: int) -> list[tuple[int, frozenset[str]]]:
    rows = session.execute(
        select(Message.uid, Message.flags)
        .where(Message.mailbox_id == mailbox_id)
        .order_by(Message.uid)
    )
    return [(uid, names.flags_from_text(flags)) for uid, flags in rows]
