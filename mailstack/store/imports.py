"""Bulk append for mail imports (``mailstack import``; see mailstack/transfer/).

One call stores many messages of one mailbox in a single group-commit item,
in the order given (an imported folder keeps its order).  A message refused
by the quota is reported in its place without failing the others.

A Dovecot Maildir's ``dovecot-uidlist`` gives each message its UID and the
folder its UIDVALIDITY; keeping them lets IMAP clients keep their caches
(RFC 9051 2.3.1.1).  :func:`adopt_uidvalidity` takes the source's
UIDVALIDITY for a mailbox that never held a message, and messages may carry
the UID they should get.  UIDs still only ever ascend: a wanted UID at or
below what the mailbox already handed out is replaced by the next free one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from mailstack.mime import MessageAnalysis
from mailstack.store.models import UIDVALIDITY_COUNTER, Counter, Mailbox
from mailstack.store.records import OverQuota, StoredMessage, StoreError
from mailstack.store.transactions import (
    _CLAIM_BY_ID,
    _MAILBOXES,
    _add_content,
    _charge,
    _claim_uids,
    _insert_messages,
    _lock_mailbox,
    _mailbox_account,
    _NewMessage,
    flush_deferred,
)

# RFC 9051 9: uniqueid and UIDVALIDITY are nz-number (32 bits).
MAX_NUMBER = 2**32 - 1

# Skip UIDNEXT forward to a wanted UID (never backward).
_RAISE_UIDNEXT = (
    update(_MAILBOXES)
    .where(_MAILBOXES.c.id == bindparam("mailbox"), _MAILBOXES.c.uidnext < bindparam("uid"))
    .values(uidnext=bindparam("uid"))
)


@dataclass(frozen=True, slots=True)
class ImportMessage:
    raw: bytes
    flags: frozenset[str]
    internal_date: datetime  # timezone-aware
    uid: int | None = None  # the UID to keep, when the source had one


def adopt_uidvalidity(session: Session, mailbox_id: int, uidvalidity: int) -> bool:
    """Give the mailbox ``uidvalidity`` if it never held a message and no
    other mailbox uses that value; True if the mailbox now has it."""
    mailbox = _lock_mailbox(session, mailbox_id)
    if mailbox.uidvalidity == uidvalidity:
        return True
    if mailbox.uidnext != 1 or not 0 < uidvalidity <= MAX_NUMBER:
        return False
    if session.scalar(select(Mailbox.id).where(Mailbox.uidvalidity == uidvalidity)) is not None:
        return False
    # Keep next_uidvalidity above every value in use, so a mailbox created
    # later can never be handed this one.
    counter = session.get(Counter, UIDVALIDITY_COUNTER, with_for_update=True)
    if counter is None:
        session.add(Counter(name=UIDVALIDITY_COUNTER, value=uidvalidity))
    else:
        counter.value = max(counter.value, uidvalidity)
    mailbox.uidvalidity = uidvalidity
    return True


def append_many(
    session: Session,
    mailbox_id: int,
    messages: Sequence[tuple[ImportMessage, MessageAnalysis] | StoreError],
) -> list[StoredMessage | StoreError]:
    """Results in input order; an input that is already an error stays one.

    The quota is charged once for the whole batch; only when that fails is it
    charged message by message, so the messages that still fit are stored."""
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
    stored = _insert_in_runs(session, mailbox_id, [(m, a) for _, m, a in accepted])
    for (index, _, _), where in zip(accepted, stored, strict=True):
        results[index] = where
    return [r for r in results if r is not None]


def _insert_in_runs(
    session: Session, mailbox_id: int, messages: list[tuple[ImportMessage, MessageAnalysis]]
) -> list[StoredMessage]:
    """Insert runs of consecutive wanted UIDs (or of messages wanting none)
    with one UID claim each."""
    stored: list[StoredMessage] = []
    start = 0
    while start < len(messages):
        first = messages[start][0].uid
        end = start + 1
        while end < len(messages) and (
            messages[end][0].uid is None
            if first is None
            else messages[end][0].uid == first + (end - start)
        ):
            end += 1
        if first is not None:
            # The group-commit batch mode keeps UIDNEXT (and new contents) in
            # memory until a flush: flush first, so the claim below reads the
            # raised UIDNEXT.
            flush_deferred(session)
            session.connection().execute(_RAISE_UIDNEXT, {"mailbox": mailbox_id, "uid": first})
        new = [
            _NewMessage(_add_content(session, m.raw), len(m.raw), m.flags, m.internal_date, a)
            for m, a in messages[start:end]
        ]
        slot = _claim_uids(session, _CLAIM_BY_ID, {"mailbox": mailbox_id, "count": len(new)})
        stored.extend(_insert_messages(session, slot, new))
        start = end
    return stored
