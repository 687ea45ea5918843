"""Sync units for CONDSTORE / QRESYNC (RFC 7162), added by the condstore work.

* :func:`resync_snapshot` reads, in ONE transaction, everything a QRESYNC
  SELECT answers with: the mailbox counters, its (UID, flags) list, the
  messages changed since the client's MODSEQ and the UIDs expunged since
  then.  One snapshot means the UIDs reported as vanished are never among
  the UIDs the session's view starts with.
* :func:`expunged_since` serves ``UID FETCH ... (CHANGEDSINCE n VANISHED)``.
* :func:`prune_expunges` forgets old expunge rows of the change log
  (``[imap] expunged_retention_days``) and raises each mailbox's
  ``expunge_log_floor`` in the same transaction, so a reader always knows
  whether the rows it finds are the whole story.

Correctness rule: expunges with MODSEQ above ``expunge_log_floor`` all have
their change-log row.  A client whose MODSEQ is at or above the floor gets
an exact answer; an older one gets ``None`` ("unknown") and the IMAP layer
falls back to reporting every UID that could have vanished (RFC 7162
3.2.5.2 allows UIDs that no longer, or never, existed in VANISHED (EARLIER)).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mailstack.store import transactions as tx
from mailstack.store.models import ChangeLog, Mailbox, Message
from mailstack.store.records import ChangeKind, MailboxRecord, MessageRecord

_EXPUNGED = ChangeKind.MESSAGE_EXPUNGED.value


@dataclass(frozen=True, slots=True)
class ResyncSnapshot:
    mailbox: MailboxRecord
    uid_flags: list[tuple[int, frozenset[str]]]  # every message, by UID
    changed: list[MessageRecord]  # MODSEQ above the client's, by UID
    vanished: list[int] | None  # expunged since; None: the log no longer knows


def _uid_flags(session: Session, mailbox_id: int) -> list[tuple[int, frozenset[str]]]:
    rows = session.execute(
        select(Message.uid, Message.flags)
        .where(Message.mailbox_id == mailbox_id)
        .order_by(Message.uid)
    )
    # Few distinct flag strings in a mailbox: parse each once.
    parsed: dict[str, frozenset[str]] = {}
    out = []
    for uid, text in rows:
        flags = parsed.get(text)
        if flags is None:
            flags = parsed[text] = frozenset(text.split())
        out.append((uid, flags))
    return out


def _one_snapshot(session: Session) -> None:
    """Make every statement of this read transaction see the same data.

    SQLite's read transaction is one snapshot already; PostgreSQL's default
    READ COMMITTED gives each statement its own, so a delivery committed
    between two of them could be in the UID list but not among the changed
    messages (and the client would never hear its flags).  Must run before
    the transaction's first statement; the pool restores the level after."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _expunged(session: Session, mailbox_id: int, since: int) -> list[int] | None:
    uids = list(
        session.scalars(
            select(ChangeLog.uid).where(
                ChangeLog.mailbox_id == mailbox_id,
                ChangeLog.modseq > since,
                ChangeLog.kind == _EXPUNGED,
            )
        )
    )
    # The floor is read after the rows (and from the database, not the
    # session's copy): a prune committed in between shows in the floor, so
    # a partial list is never taken for the whole one.
    floor = session.scalar(select(Mailbox.expunge_log_floor).where(Mailbox.id == mailbox_id))
    if floor is None or since < floor:
        return None
    return sorted({uid for uid in uids if uid is not None})


def resync_snapshot(session: Session, mailbox_id: int, since: int) -> ResyncSnapshot | None:
    _one_snapshot(session)
    mailbox = session.get(Mailbox, mailbox_id)
    if mailbox is None:
        return None
    changed = session.scalars(
        select(Message)
        .where(Message.mailbox_id == mailbox_id, Message.modseq > since)
        .order_by(Message.uid)
    )
    uid_flags = _uid_flags(session, mailbox_id)
    present = {uid for uid, _ in uid_flags}
    vanished = _expunged(session, mailbox_id, since)
    return ResyncSnapshot(
        mailbox=tx._mailbox_records(session, [mailbox])[0],
        uid_flags=uid_flags,
        changed=[tx._message_record(m) for m in changed],
        vanished=None if vanished is None else [u for u in vanished if u not in present],
    )


def expunged_since(session: Session, mailbox_id: int, since: int) -> list[int] | None:
    return _expunged(session, mailbox_id, since)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _old_boundary(session: Session, after_id: int, before: datetime) -> int:
    """The last change-log id (above ``after_id``) written before ``before``,
    by binary search over the primary key: ids follow commit order, so
    ``created_at`` grows with them (near enough; see prune_expunges)."""
    top = session.scalar(select(func.max(ChangeLog.id)))
    lo, hi = after_id, int(top or 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        created = session.scalar(
            select(ChangeLog.created_at).where(ChangeLog.id >= mid).order_by(ChangeLog.id).limit(1)
        )
        if created is not None and _aware(created) < before:
            lo = mid
        else:
            hi = mid - 1
    return lo


def prune_expunges(
    session: Session, before: datetime, after_id: int, limit: int
) -> tuple[int, int, bool]:
    """Delete up to ``limit`` expunge rows older than ``before`` with id above
    ``after_id``; returns (the id to continue after, how many went, whether
    more may remain).

    Only the old part of the log is walked, by id (the primary key: no extra
    index slows the delivery path's inserts).  A row written out of id order
    (two PostgreSQL hosts) ends the walk and is pruned on a later run."""
    boundary = _old_boundary(session, after_id, before)
    rows = session.execute(
        select(ChangeLog.id, ChangeLog.mailbox_id, ChangeLog.modseq, ChangeLog.created_at)
        .where(ChangeLog.id > after_id, ChangeLog.id <= boundary, ChangeLog.kind == _EXPUNGED)
        .order_by(ChangeLog.id)
        .limit(limit)
    ).all()
    old = []
    for row in rows:
        if _aware(row.created_at) >= before:
            break
        old.append(row)
    floors: dict[int, int] = {}
    for row in old:
        floors[row.mailbox_id] = max(floors.get(row.mailbox_id, 0), row.modseq)
    for mailbox_id, modseq in sorted(floors.items()):
        session.execute(
            update(Mailbox)
            .where(Mailbox.id == mailbox_id, Mailbox.expunge_log_floor < modseq)
            .values(expunge_log_floor=modseq)
        )
    ids = [row.id for row in old]
    for chunk in tx._chunks(ids):
        session.execute(delete(ChangeLog).where(ChangeLog.id.in_(chunk)))
    if len(old) < len(rows):  # stopped at a row out of order: look again next time
        return (ids[-1] if ids else after_id), len(ids), False
    if len(rows) == limit:
        return ids[-1], len(ids), True
    return boundary, len(ids), False
