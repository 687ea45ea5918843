"""Synchronous units of work for the outbound queue (run by ``store.py``).

Every write runs under the writer's lock (SQLite BEGIN IMMEDIATE, the
PostgreSQL advisory lock, writer.py), so claiming recipients is a plain
read-then-update: two workers, even on two hosts sharing PostgreSQL, never
hold the same recipient.  A claim is a lease (``lease_owner`` until
``lease_until``); results are only written for recipients the caller still
holds, so a worker whose lease was taken over cannot undo the new holder's
result.  A message row goes away with its last recipient that is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from mailstack.mime import MessageAnalysis
from mailstack.store import transactions as tx
from mailstack.store.models import QueuedMessage, QueuedRecipient
from mailstack.store.records import (
    DeliveryJob,
    NotFound,
    Outgoing,
    QueuedMessageRecord,
    QueuedRecipientRecord,
    RecipientOutcome,
    RecipientState,
    StoredMessage,
)

QUEUED = RecipientState.QUEUED.value


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored as UTC).
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def recipient_domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def enqueue(session: Session, outgoing: Outgoing, raw: bytes, now: datetime) -> int:
    message = QueuedMessage(
        sender=outgoing.sender,
        data=raw,
        size=len(raw),
        smtputf8=outgoing.smtputf8,
        eight_bit=outgoing.eight_bit,
        created_at=now,
    )
    session.add(message)
    session.flush()
    session.add_all(
        QueuedRecipient(
            message_id=message.id,
            address=address,
            domain=recipient_domain(address),
            state=QUEUED,
            attempts=0,
            next_attempt_at=now,
            lease_owner=None,
            lease_until=None,
            last_result="",
            warned=False,
        )
        for address in dict.fromkeys(outgoing.recipients)
    )
    session.flush()
    return message.id


def submit(
    session: Session,
    account_ids: Sequence[int],
    raw: bytes,
    analysis: MessageAnalysis,
    outgoing: Outgoing | None,
    queued_raw: bytes,
    now: datetime,
) -> list[StoredMessage]:
    """Local copies and the queue entry in one transaction: one commit
    answers the submission's 250."""
    stored = tx.deliver(session, account_ids, raw, analysis, now) if account_ids else []
    if outgoing is not None and outgoing.recipients:
        enqueue(session, outgoing, queued_raw, now)
    return stored


def _recipient_record(row: QueuedRecipient) -> QueuedRecipientRecord:
    return QueuedRecipientRecord(
        id=row.id,
        address=row.address,
        domain=row.domain,
        state=RecipientState(row.state),
        attempts=row.attempts,
        next_attempt_at=_aware(row.next_attempt_at),
        leased_until=_aware(row.lease_until) if row.lease_until else None,
        last_result=row.last_result,
        warned=row.warned,
    )


def _message_record(
    message: QueuedMessage, recipients: Sequence[QueuedRecipient]
) -> QueuedMessageRecord:
    return QueuedMessageRecord(
        id=message.id,
        sender=message.sender,
        size=message.size,
        smtputf8=message.smtputf8,
        eight_bit=message.eight_bit,
        created_at=_aware(message.created_at),
        recipients=tuple(_recipient_record(r) for r in recipients),
    )


def claim(
    session: Session, owner: str, now: datetime, lease_seconds: float, limit: int
) -> list[DeliveryJob]:
    """Lease up to ``limit`` jobs (message, domain) that are due and not
    leased by anyone else (an expired lease is free again)."""
    due = session.scalars(
        select(QueuedRecipient)
        .where(
            QueuedRecipient.state == QUEUED,
            QueuedRecipient.next_attempt_at <= now,
            or_(QueuedRecipient.lease_until.is_(None), QueuedRecipient.lease_until < now),
        )
        .order_by(QueuedRecipient.next_attempt_at, QueuedRecipient.id)
        .limit(limit * 20)
    ).all()
    groups: dict[tuple[int, str], list[QueuedRecipient]] = {}
    for row in due:
        key = (row.message_id, row.domain)
        if key in groups or len(groups) < limit:
            groups.setdefault(key, []).append(row)
    until = now + timedelta(seconds=lease_seconds)
    jobs = []
    for (message_id, domain), rows in groups.items():
        for row in rows:
            row.lease_owner, row.lease_until = owner, until
        message = session.get(QueuedMessage, message_id)
        assert message is not None  # recipients go with their message (cascade)
        jobs.append(DeliveryJob(_message_record(message, rows), domain))
    session.flush()
    return jobs


def renew(session: Session, owner: str, recipient_ids: Sequence[int], until: datetime) -> int:
    result = session.execute(
        update(QueuedRecipient)
        .where(QueuedRecipient.id.in_(recipient_ids), QueuedRecipient.lease_owner == owner)
        .values(lease_until=until)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def read_content(session: Session, message_id: int) -> bytes:
    data = session.scalar(select(QueuedMessage.data).where(QueuedMessage.id == message_id))
    if data is None:
        raise NotFound(f"no queued message {message_id}")
    return data


def _drop_finished(session: Session, message_ids: set[int]) -> None:
    for message_id in message_ids:
        pending = session.scalar(
            select(
                exists().where(
                    QueuedRecipient.message_id == message_id, QueuedRecipient.state == QUEUED
                )
            )
        )
        if not pending:
            session.execute(delete(QueuedRecipient).where(QueuedRecipient.message_id == message_id))
            session.execute(delete(QueuedMessage).where(QueuedMessage.id == message_id))


def record(
    session: Session,
    owner: str,
    outcomes: Sequence[RecipientOutcome],
    notices: Sequence[tuple[Outgoing, bytes]],
    now: datetime,
) -> int:
    """Write the outcomes of recipients ``owner`` still holds and queue the
    delivery status notifications about them, in one transaction (so a
    notification exists exactly when its failure is recorded).  Returns how
    many outcomes were written."""
    written = 0
    touched: set[int] = set()
    for outcome in outcomes:
        row = session.get(QueuedRecipient, outcome.recipient_id)
        if row is None or row.lease_owner != owner or row.state != QUEUED:
            continue
        row.state = outcome.state.value
        row.last_result = outcome.result[:2000]
        row.lease_owner, row.lease_until = None, None
        row.warned = row.warned or outcome.warned
        if outcome.state is RecipientState.QUEUED:
            row.attempts += 1
            row.next_attempt_at = outcome.next_attempt_at or now
        touched.add(row.message_id)
        written += 1
    session.flush()
    for outgoing, raw in notices:
        enqueue(session, outgoing, raw, now)
    _drop_finished(session, touched)
    return written


def deliver_locally(
    session: Session,
    owner: str,
    recipient_ids: Sequence[int],
    account_ids: Sequence[int],
    raw: bytes,
    analysis: MessageAnalysis,
    now: datetime,
) -> bool:
    """A queued message for local mailboxes (a notification to a local
    sender): the copies and the "delivered" state in one transaction.
    False (nothing stored) when the lease is no longer ours."""
    rows = session.scalars(
        select(QueuedRecipient).where(QueuedRecipient.id.in_(recipient_ids))
    ).all()
    if len(rows) != len(set(recipient_ids)) or any(
        r.lease_owner != owner or r.state != QUEUED for r in rows
    ):
        return False
    tx.deliver(session, account_ids, raw, analysis, now)
    record(
        session,
        owner,
        [
            RecipientOutcome(r.id, RecipientState.DELIVERED, "delivered to local mailbox")
            for r in rows
        ],
        (),
        now,
    )
    return True


def list_queue(session: Session) -> list[QueuedMessageRecord]:
    messages = session.scalars(select(QueuedMessage).order_by(QueuedMessage.id)).all()
    recipients: dict[int, list[QueuedRecipient]] = {}
    for row in session.scalars(select(QueuedRecipient).order_by(QueuedRecipient.id)):
        recipients.setdefault(row.message_id, []).append(row)
    return [_message_record(m, recipients.get(m.id, [])) for m in messages]


def retry(session: Session, message_id: int | None, now: datetime) -> int:
    """Make waiting recipients due now; returns how many."""
    statement = update(QueuedRecipient).where(
        QueuedRecipient.state == QUEUED, QueuedRecipient.next_attempt_at > now
    )
    if message_id is not None:
        if session.get(QueuedMessage, message_id) is None:
            raise NotFound(f"no queued message {message_id}")
        statement = statement.where(QueuedRecipient.message_id == message_id)
    result = session.execute(
        statement.values(next_attempt_at=now).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def delete_message(session: Session, message_id: int) -> int:
    """Remove a message from the queue without notifying anyone; returns
    how many recipients were still waiting."""
    if session.get(QueuedMessage, message_id) is None:
        raise NotFound(f"no queued message {message_id}")
    waiting = len(
        session.scalars(
            select(QueuedRecipient.id).where(
                QueuedRecipient.message_id == message_id, QueuedRecipient.state == QUEUED
            )
        ).all()
    )
    session.execute(delete(QueuedRecipient).where(QueuedRecipient.message_id == message_id))
    session.execute(delete(QueuedMessage).where(QueuedMessage.id == message_id))
    return waiting


def next_due(session: Session) -> datetime | None:
    """When a waiting recipient can next be claimed: its retry time, or the
    end of the lease someone holds on it (so nobody polls while a delivery
    runs)."""
    free_at = case(
        (
            and_(
                QueuedRecipient.lease_until.is_not(None),
                QueuedRecipient.lease_until > QueuedRecipient.next_attempt_at,
            ),
            QueuedRecipient.lease_until,
        ),
        else_=QueuedRecipient.next_attempt_at,
    )
    moment = session.scalar(select(func.min(free_at)).where(QueuedRecipient.state == QUEUED))
    if moment is None:
        return None
    if isinstance(moment, str):  # SQLite: min() over a CASE loses the column type
        moment = datetime.fromisoformat(moment)
    return _aware(moment)
