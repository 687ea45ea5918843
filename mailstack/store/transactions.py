"""Synchronous units of work: ``f(session, ...) -> records``.

Each function runs inside a transaction the caller (``store.py`` or the
group-commit writer) opened, in a worker thread; none commits.  They return
frozen records only, never ORM objects.

Write rules kept by every function here:

* UIDs come from ``mailbox.uidnext`` advanced under a row lock (an atomic
  ``UPDATE ... RETURNING`` on the delivery path, ``SELECT ... FOR UPDATE``
  elsewhere), so they strictly increase and are never reused (RFC 9051
  2.3.1.1).  Writers are serialized anyway: SQLite by ``BEGIN IMMEDIATE``,
  PostgreSQL by the writer's advisory lock (writer.py).
* Every change bumps the mailbox's HIGHESTMODSEQ and writes change-log rows
  in the same transaction (RFC 7162 3.1).
* Locks are taken account first, then mailboxes in id order.
* The delivery path uses Core statements built once (see _CHARGE): with group
  commit, statement-building CPU, not fsync, limits throughput.  Functions
  mixing ORM objects with those UPDATEs rely on the writer clearing the
  session between items.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Table,
    Update,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from mailstack.mime import MessageAnalysis
from mailstack.store import names, prepared
from mailstack.store.models import (
    UIDVALIDITY_COUNTER,
    Account,
    Alias,
    ChangeLog,
    Counter,
    Domain,
    Mailbox,
    Message,
    MessageContent,
)
from mailstack.store.records import (
    DEFAULT_MAILBOXES,
    AccountRecord,
    AliasRecord,
    AlreadyExists,
    Change,
    ChangeKind,
    DomainRecord,
    InUse,
    InvalidName,
    MailboxRecord,
    MessageRecord,
    NotFound,
    OverQuota,
    QuotaUsage,
    StoredMessage,
)

# Bound on IN (...) lists: SQLite allows 32766 parameters, keep well under.
CHUNK = 500
# Alias expansion limits (loop protection and a bound on fan-out).
MAX_ALIAS_DEPTH = 10
MAX_ALIAS_EXPANSIONS = 1000


def _chunks(items: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite gives back naive datetimes; everything is stored in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- records ----------------------------------------------------------------


def _domain_record(domain: Domain) -> DomainRecord:
    return DomainRecord(id=domain.id, name=domain.name)


def _account_record(account: Account) -> AccountRecord:
    return AccountRecord(
        id=account.id,
        address=account.address,
        password_hash=account.password_hash,
        quota_bytes=account.quota_bytes,
        quota_messages=account.quota_messages,
    )


def _alias_record(alias: Alias) -> AliasRecord:
    return AliasRecord(id=alias.id, alias=alias.alias, targets=tuple(alias.targets))


def _message_record(message: Message) -> MessageRecord:
    return MessageRecord(
        id=message.id,
        mailbox_id=message.mailbox_id,
        uid=message.uid,
        modseq=message.modseq,
        flags=names.flags_from_text(message.flags),
        internal_date=_aware(message.internal_date),
        size=message.size,
        content_id=message.content_id,
        envelope=message.envelope,
        bodystructure=message.bodystructure,
        headers=message.headers,
        sort_keys=message.sort_keys,
    )


def _mailbox_records(session: Session, mailboxes: Sequence[Mailbox]) -> list[MailboxRecord]:
    stats: dict[int, tuple[int, int, int]] = {}
    ids = [mailbox.id for mailbox in mailboxes]
    for chunk in _chunks(ids):
        rows = session.execute(
            select(
                Message.mailbox_id,
                func.count(),
                func.sum(case((Message.seen.is_(False), 1), else_=0)),
                func.sum(Message.size),
            )
            .where(Message.mailbox_id.in_(chunk))
            .group_by(Message.mailbox_id)
        )
        for mailbox_id, count, unseen, size in rows:
            stats[mailbox_id] = (int(count), int(unseen or 0), int(size or 0))
    records = []
    for mailbox in mailboxes:
        count, unseen, size = stats.get(mailbox.id, (0, 0, 0))
        records.append(
            MailboxRecord(
                id=mailbox.id,
                account_id=mailbox.account_id,
                name=mailbox.name,
                uidvalidity=mailbox.uidvalidity,
                uidnext=mailbox.uidnext,
                highestmodseq=mailbox.highestmodseq,
                subscribed=mailbox.subscribed,
                special_use=mailbox.special_use,
                messages=count,
                unseen=unseen,
                size=size,
            )
        )
    return records


def _change_record(row: ChangeLog) -> Change:
    return Change(
        id=row.id,
        account_id=row.account_id,
        mailbox_id=row.mailbox_id,
        mailbox_name=row.mailbox_name,
        modseq=row.modseq,
        kind=ChangeKind(row.kind),
        uid=row.uid,
        flags=None if row.flags is None else names.flags_from_text(row.flags),
        detail=row.detail,
    )


# -- shared write helpers ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Slot:
    """A mailbox row after UIDs were claimed from it (see _claim_uids)."""

    id: int
    account_id: int
    name: str
    uidvalidity: int
    highestmodseq: int
    first_uid: int


def _log(
    session: Session,
    mailbox: Mailbox | _Slot,
    kind: ChangeKind,
    *,
    uid: int | None = None,
    flags: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    row = _log_row(mailbox, kind, uid=uid, flags=flags, detail=detail)
    session.connection().execute(_INSERT_CHANGE, [row])


def _log_row(
    mailbox: Mailbox | _Slot,
    kind: ChangeKind,
    *,
    uid: int | None = None,
    flags: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "account_id": mailbox.account_id,
        "mailbox_id": mailbox.id,
        "mailbox_name": mailbox.name,
        "modseq": mailbox.highestmodseq,
        "kind": kind.value,
        "uid": uid,
        "flags": flags,
        "detail": detail or {},
        "created_at": _now(),
    }


def _bump(mailbox: Mailbox) -> int:
    mailbox.highestmodseq += 1
    return mailbox.highestmodseq


def _lock_account(session: Session, account_id: int) -> Account:
    account = session.get(Account, account_id, with_for_update=True)
    if account is None:
        raise NotFound(f"no account with id {account_id}")
    return account


def _lock_mailbox(session: Session, mailbox_id: int) -> Mailbox:
    mailbox = session.get(Mailbox, mailbox_id, with_for_update=True)
    if mailbox is None:
        raise NotFound(f"no mailbox with id {mailbox_id}")
    return mailbox


def _mailbox_account(session: Session, mailbox_id: int) -> int:
    account_id = session.scalar(select(Mailbox.account_id).where(Mailbox.id == mailbox_id))
    if account_id is None:
        raise NotFound(f"no mailbox with id {mailbox_id}")
    return account_id


def _find_mailbox(session: Session, account_id: int, name: str, *, lock: bool = False) -> Mailbox:
    query = select(Mailbox).where(
        Mailbox.account_id == account_id, Mailbox.name == names.normalize_mailbox(name)
    )
    mailbox = session.scalar(query.with_for_update() if lock else query)
    if mailbox is None:
        raise NotFound(f"no mailbox named {name!r}")
    return mailbox


def _check_quota(account: Account, add_bytes: int, add_messages: int) -> None:
    if account.quota_bytes is not None and account.used_bytes + add_bytes > account.quota_bytes:
        raise OverQuota(f"{account.address} is over its storage quota")
    if (
        account.quota_messages is not None
        and account.used_messages + add_messages > account.quota_messages
    ):
        raise OverQuota(f"{account.address} is over its message-count quota")


def _use(account: Account, add_bytes: int, add_messages: int) -> None:
    account.used_bytes += add_bytes
    account.used_messages += add_messages


def _delete_orphan_contents(session: Session, content_ids: Iterable[int]) -> None:
    """Remove contents no message refers to any more (copies share a row)."""
    ids = sorted(set(content_ids))
    for chunk in _chunks(ids):
        session.execute(
            delete(MessageContent).where(
                MessageContent.id.in_(chunk),
                ~exists().where(Message.content_id == MessageContent.id),
            )
        )


def next_uidvalidity(session: Session) -> int:
    """A UIDVALIDITY larger than every one handed out before (RFC 9051 2.3.1.1:
    a mailbox recreated with an old name must not reuse one)."""
    counter = session.get(Counter, UIDVALIDITY_COUNTER, with_for_update=True)
    if counter is None:
        counter = Counter(name=UIDVALIDITY_COUNTER, value=0)
        session.add(counter)
    counter.value = max(counter.value + 1, int(time.time()))
    return counter.value


def _new_mailbox(session: Session, account_id: int, name: str, special_use: str | None) -> Mailbox:
    mailbox = Mailbox(
        account_id=account_id,
        name=name,
        uidvalidity=next_uidvalidity(session),
        uidnext=1,
        highestmodseq=1,
        subscribed=True,
        special_use=special_use,
    )
    session.add(mailbox)
    session.flush()
    _log(session, mailbox, ChangeKind.MAILBOX_CREATED)
    return mailbox


# The statements of the delivery path are built once: building and
# cache-keying a statement costs more CPU than SQLite spends running it, and
# group commit makes CPU the limit.
_ACCOUNTS = cast(Table, Account.__table__)
_MAILBOXES = cast(Table, Mailbox.__table__)
_MESSAGES = cast(Table, Message.__table__)
_CONTENTS = cast(Table, MessageContent.__table__)
_CHANGES = cast(Table, ChangeLog.__table__)

# Add to the account's usage only if its quota allows; one UPDATE, which is
# also the row lock on PostgreSQL.
_CHARGE = (
    update(_ACCOUNTS)
    .where(
        _ACCOUNTS.c.id == bindparam("account"),
        or_(
            _ACCOUNTS.c.quota_bytes.is_(None),
            _ACCOUNTS.c.used_bytes + bindparam("add_bytes") <= _ACCOUNTS.c.quota_bytes,
        ),
        or_(
            _ACCOUNTS.c.quota_messages.is_(None),
            _ACCOUNTS.c.used_messages + bindparam("add_messages") <= _ACCOUNTS.c.quota_messages,
        ),
    )
    .values(
        used_bytes=_ACCOUNTS.c.used_bytes + bindparam("add_bytes"),
        used_messages=_ACCOUNTS.c.used_messages + bindparam("add_messages"),
    )
)
# Take UIDs and one new MODSEQ from a mailbox: atomic, and the row lock on
# PostgreSQL (SQLite writers are already serialized by BEGIN IMMEDIATE).
_CLAIM = (
    update(_MAILBOXES)
    .values(
        uidnext=_MAILBOXES.c.uidnext + bindparam("count"),
        highestmodseq=_MAILBOXES.c.highestmodseq + 1,
    )
    .returning(
        _MAILBOXES.c.id,
        _MAILBOXES.c.account_id,
        _MAILBOXES.c.name,
        _MAILBOXES.c.uidvalidity,
        _MAILBOXES.c.highestmodseq,
        _MAILBOXES.c.uidnext,
    )
)
_CLAIM_BY_ID = _CLAIM.where(_MAILBOXES.c.id == bindparam("mailbox"))
# Batch mode (defer_inserts): read once, advance in memory, write back once.
# The loads' columns are in the order of the _Usage and _Counters fields
# (their rows come from the DB-API cursor as plain tuples, see prepared.py).
_LOAD_USAGE = (
    select(
        _ACCOUNTS.c.address,
        _ACCOUNTS.c.quota_bytes,
        _ACCOUNTS.c.quota_messages,
        _ACCOUNTS.c.used_bytes,
        _ACCOUNTS.c.used_messages,
    )
    .where(_ACCOUNTS.c.id == bindparam("account"))
    .with_for_update()
)
_ADD_USAGE = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("account"))
    .values(
        used_bytes=_ACCOUNTS.c.used_bytes + bindparam("add_bytes"),
        used_messages=_ACCOUNTS.c.used_messages + bindparam("add_messages"),
    )
)
_MAILBOX_COUNTERS = select(
    _MAILBOXES.c.id,
    _MAILBOXES.c.account_id,
    _MAILBOXES.c.name,
    _MAILBOXES.c.uidvalidity,
    _MAILBOXES.c.uidnext,
    _MAILBOXES.c.highestmodseq,
).with_for_update()
_LOAD_MAILBOX = _MAILBOX_COUNTERS.where(_MAILBOXES.c.id == bindparam("mailbox"))
_LOAD_INBOX = _MAILBOX_COUNTERS.where(
    _MAILBOXES.c.account_id == bindparam("account"), _MAILBOXES.c.name == names.INBOX
)
_SET_COUNTERS = (
    update(_MAILBOXES)
    .where(_MAILBOXES.c.id == bindparam("mailbox"))
    .values(uidnext=bindparam("new_uidnext"), highestmodseq=bindparam("new_modseq"))
)
_CLAIM_INBOX = _CLAIM.where(
    _MAILBOXES.c.account_id == bindparam("account"), _MAILBOXES.c.name == names.INBOX
)
_INSERT_CONTENT = insert(_CONTENTS).returning(_CONTENTS.c.id)
_INSERT_MESSAGE = insert(_MESSAGES)
_INSERT_CHANGE = insert(_CHANGES)
# session.info key of rows held back by defer_inserts.
_DEFERRED = "mailstack.deferred_rows"


def _charge(session: Session, account_id: int, add_bytes: int, add_messages: int) -> None:
    """Charge the account's quota, else NotFound / OverQuota."""
    deferred: _Deferred | None = session.info.get(_DEFERRED)
    if deferred is not None:
        _charge_deferred(session, deferred, account_id, add_bytes, add_messages)
        return
    params = {"account": account_id, "add_bytes": add_bytes, "add_messages": add_messages}
    if session.connection().execute(_CHARGE, params).rowcount == 1:
        return
    address = session.scalar(select(Account.address).where(Account.id == account_id))
    if address is None:
        raise NotFound(f"no account with id {account_id}")
    raise OverQuota(f"{address} is over its quota")


def _charge_deferred(
    session: Session, deferred: _Deferred, account_id: int, add_bytes: int, add_messages: int
) -> None:
    usage = deferred.usage.get(account_id)
    if usage is None:
        row = _runner(session, deferred).first_row(_LOAD_USAGE, {"account": account_id})
        if row is None:
            raise NotFound(f"no account with id {account_id}")
        usage = _Usage(*row)
        deferred.usage[account_id] = usage
    if (usage.quota_bytes is not None and usage.used_bytes + add_bytes > usage.quota_bytes) or (
        usage.quota_messages is not None
        and usage.used_messages + add_messages > usage.quota_messages
    ):
        raise OverQuota(f"{usage.address} is over its quota")
    usage.used_bytes += add_bytes
    usage.used_messages += add_messages
    usage.add_bytes += add_bytes
    usage.add_messages += add_messages


def _claim_uids(session: Session, statement: Update, params: dict[str, Any]) -> _Slot:
    """Take ``params["count"]`` UIDs and one new MODSEQ from the mailbox
    chosen by ``statement`` (_CLAIM_BY_ID or _CLAIM_INBOX)."""
    deferred: _Deferred | None = session.info.get(_DEFERRED)
    if deferred is not None:
        return _claim_deferred(session, deferred, statement, params)
    row = session.connection().execute(statement, params).one_or_none()
    if row is None:
        raise NotFound("no such mailbox")
    return _Slot(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        uidvalidity=row.uidvalidity,
        highestmodseq=row.highestmodseq,
        first_uid=row.uidnext - params["count"],
    )


def _claim_deferred(
    session: Session, deferred: _Deferred, statement: Update, params: dict[str, Any]
) -> _Slot:
    if statement is _CLAIM_INBOX:
        mailbox_id = deferred.inboxes.get(params["account"])
        load = _LOAD_INBOX
    else:
        mailbox_id = params["mailbox"]
        load = _LOAD_MAILBOX
    counters = None if mailbox_id is None else deferred.mailboxes.get(mailbox_id)
    if counters is None:
        row = _runner(session, deferred).first_row(load, params)
        if row is None:
            raise NotFound("no such mailbox")
        loaded = _Counters(*row)
        # setdefault: the mailbox may already be cached under its other key.
        counters = deferred.mailboxes.setdefault(loaded.id, loaded)
        if counters.name == names.INBOX:
            deferred.inboxes[counters.account_id] = counters.id
    first_uid = counters.uidnext
    counters.uidnext += params["count"]
    counters.highestmodseq += 1
    counters.changed = True
    return _Slot(
        id=counters.id,
        account_id=counters.account_id,
        name=counters.name,
        uidvalidity=counters.uidvalidity,
        highestmodseq=counters.highestmodseq,
        first_uid=first_uid,
    )


@dataclass(frozen=True, slots=True)
class _NewMessage:
    content_id: int
    size: int
    flags: frozenset[str]
    internal_date: datetime
    analysis: MessageAnalysis


def _insert_messages(
    session: Session, slot: _Slot, messages: Sequence[_NewMessage]
) -> list[StoredMessage]:
    """Insert messages with consecutive UIDs from ``slot`` and their
    change-log rows (the caller charged the quota)."""
    message_rows: list[dict[str, Any]] = []
    log_rows: list[dict[str, Any]] = []
    stored: list[StoredMessage] = []
    for offset, new in enumerate(messages):
        uid = slot.first_uid + offset
        flags_text = names.flags_to_text(new.flags)
        message_rows.append(
            {
                "mailbox_id": slot.id,
                "uid": uid,
                "modseq": slot.highestmodseq,
                "flags": flags_text,
                "seen": "\\Seen" in new.flags,
                "deleted": "\\Deleted" in new.flags,
                "internal_date": new.internal_date.astimezone(UTC),
                "size": new.size,
                "content_id": new.content_id,
                "envelope": new.analysis.envelope,
                "bodystructure": new.analysis.bodystructure,
                "headers": new.analysis.headers,
                "sort_keys": new.analysis.sort_keys,
            }
        )
        log_rows.append(_log_row(slot, ChangeKind.MESSAGE_NEW, uid=uid, flags=flags_text))
        stored.append(
            StoredMessage(
                account_id=slot.account_id,
                mailbox_id=slot.id,
                uidvalidity=slot.uidvalidity,
                uid=uid,
                modseq=slot.highestmodseq,
            )
        )
    deferred: _Deferred | None = session.info.get(_DEFERRED)
    if deferred is not None:
        deferred.messages.extend(message_rows)
        deferred.changes.extend(log_rows)
    else:
        connection = session.connection()
        connection.execute(_INSERT_MESSAGE, message_rows)
        connection.execute(_INSERT_CHANGE, log_rows)
    return stored


@dataclass(slots=True)
class _Usage:
    address: str
    quota_bytes: int | None
    quota_messages: int | None
    used_bytes: int  # including what this batch added
    used_messages: int
    add_bytes: int = 0
    add_messages: int = 0


@dataclass(slots=True)
class _Counters:
    id: int
    account_id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    changed: bool = False


@dataclass(slots=True)
class _Deferred:
    contents: list[dict[str, bytes]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[int, _Usage] = field(default_factory=dict)
    mailboxes: dict[int, _Counters] = field(default_factory=dict)
    inboxes: dict[int, int] = field(default_factory=dict)  # account id -> INBOX id
    runner: prepared.Runner | None = None  # opened by the first statement

    @property
    def holds_anything(self) -> bool:
        return bool(self.usage or self.mailboxes or self.contents or self.messages or self.changes)


def defer_inserts(session: Session) -> None:
    """Batch mode for a run of deliveries in one transaction.

    Quota usage and mailbox counters (UIDNEXT, HIGHESTMODSEQ) are read once
    per batch and advanced in memory; new contents, messages and change-log
    rows are collected.  :func:`flush_deferred` writes it all with one
    statement per table.  This is sound because writers are serialized
    (BEGIN IMMEDIATE / the PostgreSQL advisory lock, and the loads take
    FOR UPDATE), so nothing else changes those rows inside the transaction.
    Until the flush a content id is a placeholder (minus one minus its
    index).  The group-commit writer flushes before any other kind of write
    and before COMMIT, so nothing in the transaction reads around the
    pending state; an item that fails makes the writer roll the whole batch
    back and rerun it item by item without this mode."""
    session.info[_DEFERRED] = _Deferred()


def flush_deferred(session: Session) -> None:
    deferred: _Deferred | None = session.info.get(_DEFERRED)
    if deferred is None or not deferred.holds_anything:
        return
    usage = [
        {"account": account_id, "add_bytes": u.add_bytes, "add_messages": u.add_messages}
        for account_id, u in deferred.usage.items()
        if u.add_bytes or u.add_messages
    ]
    run = _runner(session, deferred)
    run.execute_many(_ADD_USAGE, usage)
    counters = [
        {"mailbox": c.id, "new_uidnext": c.uidnext, "new_modseq": c.highestmodseq}
        for c in deferred.mailboxes.values()
        if c.changed
    ]
    run.execute_many(_SET_COUNTERS, counters)
    ids = run.insert_returning_ids(_INSERT_CONTENT, deferred.contents)
    for row in deferred.messages:
        if row["content_id"] < 0:
            row["content_id"] = ids[-1 - row["content_id"]]
    run.execute_many(_INSERT_MESSAGE, deferred.messages)
    run.execute_many(_INSERT_CHANGE, deferred.changes)
    run.close()
    session.info[_DEFERRED] = _Deferred()


def _runner(session: Session, deferred: _Deferred) -> prepared.Runner:
    if deferred.runner is None:
        deferred.runner = prepared.Runner(session)
    return deferred.runner


def _add_content(session: Session, raw: bytes) -> int:
    deferred = session.info.get(_DEFERRED)
    if deferred is not None:
        deferred.contents.append({"data": raw})
        return -len(deferred.contents)
    content_id: int = session.connection().execute(_INSERT_CONTENT, {"data": raw}).scalar_one()
    return content_id


# -- domains, accounts, aliases ----------------------------------------------


def add_domain(session: Session, name: str) -> DomainRecord:
    domain_name = names.normalize_domain(name)
    if session.scalar(select(Domain).where(Domain.name == domain_name)) is not None:
        raise AlreadyExists(f"domain {domain_name} already exists")
    domain = Domain(name=domain_name)
    session.add(domain)
    session.flush()
    return _domain_record(domain)


def list_domains(session: Session) -> list[DomainRecord]:
    return [_domain_record(d) for d in session.scalars(select(Domain).order_by(Domain.name))]


def _get_domain(session: Session, name: str) -> Domain:
    domain = session.scalar(select(Domain).where(Domain.name == names.normalize_domain(name)))
    if domain is None:
        raise NotFound(f"{name} is not a local domain")
    return domain


def delete_domain(session: Session, name: str) -> None:
    """Refuses (InUse) while accounts or aliases remain in the domain."""
    domain = _get_domain(session, name)
    for model in (Account, Alias):
        if session.scalar(select(exists().where(model.domain_id == domain.id))):
            raise InUse(f"domain {domain.name} still has accounts or aliases")
    session.delete(domain)


def is_local_domain(session: Session, name: str) -> bool:
    try:
        domain_name = names.normalize_domain(name)
    except InvalidName:
        return False
    return bool(session.scalar(select(exists().where(Domain.name == domain_name))))


def add_account(session: Session, address: str, password_hash: str) -> AccountRecord:
    normalized = names.normalize_address(address)
    domain = _get_domain(session, names.domain_of(normalized))
    key = normalized.lower()
    if session.scalar(select(exists().where(Account.address_key == key))):
        raise AlreadyExists(f"account {normalized} already exists")
    account = Account(
        domain_id=domain.id,
        address=normalized,
        address_key=key,
        password_hash=password_hash,
        quota_bytes=None,
        quota_messages=None,
        used_bytes=0,
        used_messages=0,
        created_at=_now(),
    )
    session.add(account)
    session.flush()
    for mailbox_name, special_use in DEFAULT_MAILBOXES:
        _new_mailbox(session, account.id, mailbox_name, special_use)
    return _account_record(account)


def _find_account(session: Session, address: str) -> Account | None:
    try:
        key = names.address_key(address)
    except InvalidName:
        return None
    return session.scalar(select(Account).where(Account.address_key == key))


def _require_account(session: Session, address: str) -> Account:
    account = _find_account(session, address)
    if account is None:
        raise NotFound(f"no account {address}")
    return account


def get_account(session: Session, address: str) -> AccountRecord | None:
    account = _find_account(session, address)
    return None if account is None else _account_record(account)


def get_account_by_id(session: Session, account_id: int) -> AccountRecord | None:
    account = session.get(Account, account_id)
    return None if account is None else _account_record(account)


def list_accounts(session: Session) -> list[AccountRecord]:
    accounts = session.scalars(select(Account).order_by(Account.address_key))
    return [_account_record(a) for a in accounts]


def set_password_hash(session: Session, address: str, password_hash: str) -> None:
    _require_account(session, address).password_hash = password_hash


def set_quota(
    session: Session, address: str, quota_bytes: int | None, quota_messages: int | None
) -> None:
    account = _require_account(session, address)
    account.quota_bytes = quota_bytes
    account.quota_messages = quota_messages


def delete_account(session: Session, address: str) -> None:
    """Deletes the account with its mailboxes and messages."""
    account = _require_account(session, address)
    mailbox_ids = list(session.scalars(select(Mailbox.id).where(Mailbox.account_id == account.id)))
    content_ids: list[int] = []
    for chunk in _chunks(mailbox_ids):
        content_ids.extend(
            session.scalars(select(Message.content_id).where(Message.mailbox_id.in_(chunk)))
        )
        session.execute(delete(Message).where(Message.mailbox_id.in_(chunk)))
    session.execute(delete(Mailbox).where(Mailbox.account_id == account.id))
    session.delete(account)
    session.flush()
    _delete_orphan_contents(session, content_ids)


def add_alias(session: Session, alias: str, targets: Sequence[str]) -> AliasRecord:
    normalized = names.normalize_alias(alias)
    domain = _get_domain(session, names.domain_of(normalized))
    if not targets:
        raise InvalidName("an alias needs at least one target")
    target_list = [names.normalize_address(target) for target in targets]
    key = normalized.lower()
    if session.scalar(select(exists().where(Alias.alias_key == key))):
        raise AlreadyExists(f"alias {normalized} already exists")
    row = Alias(domain_id=domain.id, alias=normalized, alias_key=key, targets=target_list)
    session.add(row)
    session.flush()
    return _alias_record(row)


def list_aliases(session: Session) -> list[AliasRecord]:
    return [_alias_record(a) for a in session.scalars(select(Alias).order_by(Alias.alias_key))]


def delete_alias(session: Session, alias: str) -> None:
    key = names.normalize_alias(alias).lower()
    row = session.scalar(select(Alias).where(Alias.alias_key == key))
    if row is None:
        raise NotFound(f"no alias {alias}")
    session.delete(row)


def _alias_targets(session: Session, key: str) -> list[str] | None:
    return session.scalar(select(Alias.targets).where(Alias.alias_key == key))


def resolve_recipient(session: Session, address: str) -> list[AccountRecord] | None:
    """Account first, then an exact alias, then the domain's catch-all;
    aliases expand recursively (bounded, each address visited once)."""
    try:
        start = names.address_key(address)
    except InvalidName:
        return None
    found: dict[int, AccountRecord] = {}
    seen: set[str] = set()
    frontier = [start]
    expansions = 0
    for _depth in range(MAX_ALIAS_DEPTH):
        next_frontier: list[str] = []
        for key in frontier:
            if key in seen:
                continue
            seen.add(key)
            expansions += 1
            if expansions > MAX_ALIAS_EXPANSIONS:
                break
            account = session.scalar(select(Account).where(Account.address_key == key))
            if account is not None:
                found.setdefault(account.id, _account_record(account))
                continue
            targets = _alias_targets(session, key)
            if targets is None:
                targets = _alias_targets(session, "@" + names.domain_of(key))
            for target in targets or ():
                next_frontier.append(target.lower())
        frontier = next_frontier
        if not frontier:
            break
    return list(found.values()) or None


def addresses_owned_by(session: Session, account_id: int) -> list[str]:
    """The account's address plus each exact alias resolving to it alone."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"no account with id {account_id}")
    result = [account.address]
    for alias in session.scalars(select(Alias).order_by(Alias.alias_key)):
        if alias.alias.startswith("@"):
            continue
        resolved = resolve_recipient(session, alias.alias)
        if resolved is not None and [r.id for r in resolved] == [account_id]:
            result.append(alias.alias)
    return result


# -- mailboxes ---------------------------------------------------------------


def list_mailboxes(session: Session, account_id: int) -> list[MailboxRecord]:
    mailboxes = list(
        session.scalars(
            select(Mailbox).where(Mailbox.account_id == account_id).order_by(Mailbox.name)
        )
    )
    return _mailbox_records(session, mailboxes)


def get_mailbox(session: Session, account_id: int, name: str) -> MailboxRecord | None:
    try:
        mailbox = _find_mailbox(session, account_id, name)
    except (NotFound, InvalidName):
        return None
    return _mailbox_records(session, [mailbox])[0]


def get_mailbox_by_id(session: Session, mailbox_id: int) -> MailboxRecord | None:
    mailbox = session.get(Mailbox, mailbox_id)
    return None if mailbox is None else _mailbox_records(session, [mailbox])[0]


def create_mailbox(
    session: Session, account_id: int, name: str, special_use: str | None = None
) -> MailboxRecord:
    normalized = names.normalize_mailbox(name)
    if special_use is not None and special_use not in names.SPECIAL_USE:
        raise InvalidName(f"not a special-use attribute: {special_use!r}")
    _lock_account(session, account_id)
    exists_query = exists().where(Mailbox.account_id == account_id, Mailbox.name == normalized)
    if session.scalar(select(exists_query)):
        raise AlreadyExists(f"mailbox {normalized!r} already exists")
    mailbox = _new_mailbox(session, account_id, normalized, special_use)
    return _mailbox_records(session, [mailbox])[0]


def delete_mailbox(session: Session, account_id: int, name: str) -> None:
    """Deletes the mailbox and its messages; inferior names stay (RFC 9051
    6.3.4: they are not \\Noselect here, so deleting the parent is allowed)."""
    if names.normalize_mailbox(name) == names.INBOX:
        raise InvalidName("INBOX cannot be deleted")
    account = _lock_account(session, account_id)
    mailbox = _find_mailbox(session, account_id, name, lock=True)
    count, size = session.execute(
        select(func.count(), func.coalesce(func.sum(Message.size), 0)).where(
            Message.mailbox_id == mailbox.id
        )
    ).one()
    content_ids = list(
        session.scalars(select(Message.content_id).where(Message.mailbox_id == mailbox.id))
    )
    session.execute(delete(Message).where(Message.mailbox_id == mailbox.id))
    _use(account, -int(size), -int(count))
    _bump(mailbox)
    _log(session, mailbox, ChangeKind.MAILBOX_DELETED)
    session.delete(mailbox)
    session.flush()
    _delete_orphan_contents(session, content_ids)


def rename_mailbox(session: Session, account_id: int, old: str, new: str) -> None:
    old_name = names.normalize_mailbox(old)
    new_name = names.normalize_mailbox(new)
    _lock_account(session, account_id)
    source = _find_mailbox(session, account_id, old_name, lock=True)
    if new_name == names.INBOX or session.scalar(
        select(exists().where(Mailbox.account_id == account_id, Mailbox.name == new_name))
    ):
        raise AlreadyExists(f"mailbox {new_name!r} already exists")
    if old_name == names.INBOX:
        _rename_inbox(session, source, new_name)
        return
    if new_name.startswith(old_name + names.DELIMITER):
        raise InvalidName("cannot rename a mailbox into its own hierarchy")
    prefix = old_name + names.DELIMITER
    children = list(
        session.scalars(
            select(Mailbox)
            .where(
                Mailbox.account_id == account_id, Mailbox.name.startswith(prefix, autoescape=True)
            )
            .with_for_update()
        )
    )
    # RFC 9051 6.3.6: inferior hierarchical names are renamed too.
    renames = [(source, new_name)] + [
        (child, new_name + child.name[len(old_name) :]) for child in children
    ]
    targets = [target for _, target in renames[1:]]
    for chunk_start in range(0, len(targets), CHUNK):
        chunk = targets[chunk_start : chunk_start + CHUNK]
        taken = session.scalar(
            select(Mailbox.name).where(Mailbox.account_id == account_id, Mailbox.name.in_(chunk))
        )
        if taken is not None:
            raise AlreadyExists(f"mailbox {taken!r} already exists")
    for mailbox, target in renames:
        previous = mailbox.name
        mailbox.name = target
        _bump(mailbox)
        _log(session, mailbox, ChangeKind.MAILBOX_RENAMED, detail={"old": previous, "new": target})


def _rename_inbox(session: Session, inbox: Mailbox, new_name: str) -> None:
    """RFC 9051 6.3.6: renaming INBOX moves its messages to a new mailbox and
    leaves INBOX empty; the moved messages keep their UIDs under the new
    mailbox's fresh UIDVALIDITY."""
    target = _new_mailbox(session, inbox.account_id, new_name, None)
    target.uidnext = inbox.uidnext
    moved = list(
        session.execute(
            select(Message.uid, Message.flags)
            .where(Message.mailbox_id == inbox.id)
            .order_by(Message.uid)
        )
    )
    if not moved:
        return
    modseq = _bump(target)
    session.execute(
        update(Message)
        .where(Message.mailbox_id == inbox.id)
        .values(mailbox_id=target.id, modseq=modseq)
    )
    _bump(inbox)
    for uid, flags in moved:
        _log(session, inbox, ChangeKind.MESSAGE_EXPUNGED, uid=uid)
        _log(session, target, ChangeKind.MESSAGE_NEW, uid=uid, flags=flags)


def set_subscribed(session: Session, account_id: int, name: str, subscribed: bool) -> None:
    _find_mailbox(session, account_id, name).subscribed = subscribed


# -- messages ----------------------------------------------------------------


def deliver(
    session: Session,
    account_ids: Sequence[int],
    raw: bytes,
    analysis: MessageAnalysis,
    internal_date: datetime,
) -> list[StoredMessage]:
    """One copy in each account's INBOX, all or nothing (OverQuota for one
    account refuses the whole call; call per account for per-recipient
    results).  The accounts share one content row."""
    ordered = sorted(set(account_ids))
    if not ordered:
        return []
    for account_id in ordered:
        _charge(session, account_id, len(raw), 1)
    new = _NewMessage(_add_content(session, raw), len(raw), frozenset(), internal_date, analysis)
    stored = {}
    for account_id in ordered:
        slot = _claim_uids(session, _CLAIM_INBOX, {"account": account_id, "count": 1})
        [stored[account_id]] = _insert_messages(session, slot, [new])
    return [stored[account_id] for account_id in dict.fromkeys(account_ids)]


def append(
    session: Session,
    mailbox_id: int,
    raw: bytes,
    analysis: MessageAnalysis,
    flags: frozenset[str],
    internal_date: datetime,
) -> StoredMessage:
    [stored] = append_all(session, mailbox_id, [(raw, analysis, flags, internal_date)])
    return stored


def append_all(
    session: Session,
    mailbox_id: int,
    messages: Sequence[tuple[bytes, MessageAnalysis, frozenset[str], datetime]],
) -> list[StoredMessage]:
    """Append in one go with consecutive UIDs (IMAP MULTIAPPEND, RFC 3502):
    the quota is charged for all of them, so OverQuota stores none."""
    size = sum(len(raw) for raw, _, _, _ in messages)
    _charge(session, _mailbox_account(session, mailbox_id), size, len(messages))
    slot = _claim_uids(session, _CLAIM_BY_ID, {"mailbox": mailbox_id, "count": len(messages)})
    new = [
        _NewMessage(_add_content(session, raw), len(raw), flags, when, analysis)
        for raw, analysis, flags, when in messages
    ]
    return _insert_messages(session, slot, new)


def list_messages(session: Session, mailbox_id: int, since_uid: int = 0) -> list[MessageRecord]:
    messages = session.scalars(
        select(Message)
        .where(Message.mailbox_id == mailbox_id, Message.uid > since_uid)
        .order_by(Message.uid)
    )
    return [_message_record(m) for m in messages]


def read_content(session: Session, content_id: int) -> bytes:
    data = session.scalar(select(MessageContent.data).where(MessageContent.id == content_id))
    if data is None:
        raise NotFound(f"no message content {content_id}")
    return data


def _messages_by_uid(session: Session, mailbox_id: int, uids: Sequence[int]) -> list[Message]:
    found: list[Message] = []
    for chunk in _chunks(sorted(set(uids))):
        found.extend(
            session.scalars(
                select(Message).where(Message.mailbox_id == mailbox_id, Message.uid.in_(chunk))
            )
        )
    found.sort(key=lambda m: m.uid)
    return found


def set_flags(
    session: Session,
    mailbox_id: int,
    uids: Sequence[int],
    mode: str,
    flags: frozenset[str],
    unchanged_since: int | None,
) -> tuple[list[MessageRecord], list[int]]:
    """STORE.  Messages whose flags really change share one new MODSEQ; with
    UNCHANGEDSINCE, messages modified after it fail (RFC 7162 3.1.3)."""
    if mode not in ("add", "remove", "replace"):
        raise ValueError(f"unknown flag mode {mode!r}")
    mailbox = _lock_mailbox(session, mailbox_id)
    changed: list[Message] = []
    failed: list[int] = []
    for message in _messages_by_uid(session, mailbox_id, uids):
        if unchanged_since is not None and message.modseq > unchanged_since:
            failed.append(message.uid)
            continue
        old = names.flags_from_text(message.flags)
        new = old | flags if mode == "add" else old - flags if mode == "remove" else flags
        if new != old:
            changed.append(message)
            message.flags = names.flags_to_text(new)
            message.seen = "\\Seen" in new
            message.deleted = "\\Deleted" in new
    if changed:
        modseq = _bump(mailbox)
        for message in changed:
            message.modseq = modseq
            _log(session, mailbox, ChangeKind.MESSAGE_FLAGS, uid=message.uid, flags=message.flags)
        session.flush()
    return [_message_record(m) for m in changed], failed


def _lock_pair(session: Session, src_id: int, dest_id: int) -> tuple[Mailbox, Mailbox]:
    locked = {i: _lock_mailbox(session, i) for i in sorted({src_id, dest_id})}
    return locked[src_id], locked[dest_id]


def copy_messages(
    session: Session, src_mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int
) -> list[tuple[int, int]]:
    """COPY (RFC 9051 6.4.7): flags and internal date are kept; the copies
    share content with the originals."""
    _mailbox_account(session, src_mailbox_id)  # NotFound for a bad source
    messages = _messages_by_uid(session, src_mailbox_id, uids)
    if not messages:
        return []
    account_id = _mailbox_account(session, dest_mailbox_id)
    _charge(session, account_id, sum(m.size for m in messages), len(messages))
    slot = _claim_uids(session, _CLAIM_BY_ID, {"mailbox": dest_mailbox_id, "count": len(messages)})
    copies = [
        _NewMessage(
            content_id=m.content_id,
            size=m.size,
            flags=names.flags_from_text(m.flags),
            internal_date=_aware(m.internal_date),
            analysis=MessageAnalysis(
                envelope=m.envelope,
                bodystructure=m.bodystructure,
                headers=m.headers,
                sort_keys=m.sort_keys,
            ),
        )
        for m in messages
    ]
    stored = _insert_messages(session, slot, copies)
    return [(m.uid, new.uid) for m, new in zip(messages, stored, strict=True)]


def move_messages(
    session: Session, src_mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int
) -> list[tuple[int, int]]:
    """MOVE (RFC 6851): the rows move (no content copy); the source logs
    expunges, the destination new messages."""
    src_account_id = _mailbox_account(session, src_mailbox_id)
    dest_account_id = _mailbox_account(session, dest_mailbox_id)
    accounts = {i: _lock_account(session, i) for i in sorted({src_account_id, dest_account_id})}
    source, dest = _lock_pair(session, src_mailbox_id, dest_mailbox_id)
    messages = _messages_by_uid(session, src_mailbox_id, uids)
    if not messages:
        return []
    size = sum(m.size for m in messages)
    if src_account_id != dest_account_id:
        _check_quota(accounts[dest_account_id], size, len(messages))
        _use(accounts[dest_account_id], size, len(messages))
        _use(accounts[src_account_id], -size, -len(messages))
    dest_modseq = _bump(dest)
    if source is not dest:
        _bump(source)
    pairs = []
    for message in messages:
        old_uid = message.uid
        message.uid = dest.uidnext
        dest.uidnext += 1
        message.mailbox_id = dest.id
        message.modseq = dest_modseq
        pairs.append((old_uid, message.uid))
        _log(session, source, ChangeKind.MESSAGE_EXPUNGED, uid=old_uid)
        _log(session, dest, ChangeKind.MESSAGE_NEW, uid=message.uid, flags=message.flags)
    session.flush()
    return pairs


def expunge(session: Session, mailbox_id: int, uids: Sequence[int] | None) -> list[int]:
    account = _lock_account(session, _mailbox_account(session, mailbox_id))
    mailbox = _lock_mailbox(session, mailbox_id)
    query = select(Message.id, Message.uid, Message.size, Message.content_id).where(
        Message.mailbox_id == mailbox_id, Message.deleted.is_(True)
    )
    rows = list(session.execute(query.order_by(Message.uid)))
    if uids is not None:
        wanted = set(uids)
        rows = [row for row in rows if row.uid in wanted]
    if not rows:
        return []
    _bump(mailbox)
    for row in rows:
        _log(session, mailbox, ChangeKind.MESSAGE_EXPUNGED, uid=row.uid)
    for chunk in _chunks([row.id for row in rows]):
        session.execute(delete(Message).where(Message.id.in_(chunk)))
    _use(account, -sum(row.size for row in rows), -len(rows))
    _delete_orphan_contents(session, [row.content_id for row in rows])
    return [row.uid for row in rows]


def quota_usage(session: Session, account_id: int) -> QuotaUsage:
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"no account with id {account_id}")
    return QuotaUsage(
        bytes_used=account.used_bytes,
        messages_used=account.used_messages,
        quota_bytes=account.quota_bytes,
        quota_messages=account.quota_messages,
    )


# -- change log --------------------------------------------------------------


def changes_since(session: Session, change_id: int, limit: int) -> list[Change]:
    rows = session.scalars(
        select(ChangeLog).where(ChangeLog.id > change_id).order_by(ChangeLog.id).limit(limit)
    )
    return [_change_record(row) for row in rows]


def last_change_id(session: Session) -> int:
    return int(session.scalar(select(func.coalesce(func.max(ChangeLog.id), 0))) or 0)
