"""Bulk append for mail imports (``mailstack import``; see mailstack/transfer/).

One call stores many messages of one mailbox in a single group-commit item:
they get consecutive UIDs in the order given (an imported folder keeps its
order), and a message refused by the quota is reported in its place without
failing the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from mailstack.mime import MessageAnalysis
from mailstack.store.records import OverQuota, StoredMessage, StoreError
from mailstack.store.transactions import (
    _CLAIM_BY_ID,
    _add_content,
    _charge,
    _claim_uids,
    _insert_messages,
    _mailbox_account,
    _NewMessage,
)


@dataclass(frozen=True, slots=True)
class ImportMessage:
    raw: bytes
    flags: frozenset[str]
    internal_date: datetime  # timezone-aware


def append_many(
    session: Session,
    mailbox_id: int,
    messages: Sequence[tuple[ImportMessage, MessageAnalysis] | StoreError],
) -> list[StoredMessage | StoreError]:
    """Results in input order; an input that is already an error stays one."""
    account_id = _mailbox_account(session, mailbox_id)
    results: list[StoredMessage | StoreError | None] = []
    accepted: list[tuple[int, _NewMessage]] = []
    for item in messages:
        if isinstance(item, StoreError):
            results.append(item)
            continue
        message, analysis = item
        try:
            _charge(session, account_id, len(message.raw), 1)
        except OverQuota as exc:
            results.append(exc)
            continue
        content_id = _add_content(session, message.raw)
        new = _NewMessage(
            content_id, len(message.raw), message.flags, message.internal_date, analysis
        )
        accepted.append((len(results), new))
        results.append(None)
    if accepted:
        slot = _claim_uids(session, _CLAIM_BY_ID, {"mailbox": mailbox_id, "count": len(accepted)})
        stored = _insert_messages(session, slot, [new for _, new in accepted])
        for (index, _), where in zip(accepted, stored, strict=True):
            results[index] = where
    return [r for r in results if r is not None]
