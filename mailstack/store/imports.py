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

from sqlalchemy import insert
from sqlalchemy.orm import Session

from mailstack.mime import MessageAnalysis
from mailstack.store.records import OverQuota, StoredMessage, StoreError
from mailstack.store.transactions import (
    _CLAIM_BY_ID,
    _CONTENTS,
    _charge,
    _claim_uids,
    _insert_messages,
    _mailbox_account,
    _NewMessage,
)

# Ids come back in the order of the rows (SQLAlchemy "insertmanyvalues").
_INSERT_CONTENTS = insert(_CONTENTS).returning(_CONTENTS.c.id, sort_by_parameter_order=True)


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
    """Results in input order; an input that is already an error stays one.

    The quota is charged once for the whole batch; only when that fails is it
    charged message by message, so the messages that still fit are stored.
    Contents go in with one multi-row INSERT ... RETURNING."""
    account_id = _mailbox_account(session, mailbox_id)
    results: list[StoredMessage | StoreError | None] = []
    accepted: list[tuple[int, ImportMessage, MessageAnalysis]] = []
    for item in messages:
        if isinstance(item, StoreError):
            results.append(item)
        else:
            accepted.append((len(results), *item))
            results.append(None)
    try:
        _charge(session, account_id, sum(len(m.raw) for _, m, _ in accepted), len(accepted))
    except OverQuota:
        fitting = []
        for index, message, analysis in accepted:
            try:
                _charge(session, account_id, len(message.raw), 1)
                fitting.append((index, message, analysis))
            except OverQuota as exc:
                results[index] = exc
        accepted = fitting
    if accepted:
        rows = [{"data": message.raw} for _, message, _ in accepted]
        content_ids = session.connection().execute(_INSERT_CONTENTS, rows).scalars().all()
        new = [
            _NewMessage(content_id, len(m.raw), m.flags, m.internal_date, analysis)
            for content_id, (_, m, analysis) in zip(content_ids, accepted, strict=True)
        ]
        slot = _claim_uids(session, _CLAIM_BY_ID, {"mailbox": mailbox_id, "count": len(new)})
        stored = _insert_messages(session, slot, new)
        for (index, _, _), where in zip(accepted, stored, strict=True):
            results[index] = where
    return [r for r in results if r is not None]
