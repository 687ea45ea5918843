"""POP3 maildrop locks as rows of ``maildrop_locks`` (sync; run by the writer).

Each write transaction is serialised (SQLite's BEGIN IMMEDIATE, PostgreSQL's
writer advisory lock, see writer.py) and the row is also read FOR UPDATE, so
two hosts can never both see a maildrop free.  Times are Unix milliseconds
by the database's clock on PostgreSQL (hosts' clocks may disagree; the
database's is the one all of them share) and by this host's on SQLite
(one host by construction).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, delete, insert, select, text, update
from sqlalchemy.orm import Session

from mailstack.store.models import Account, MaildropLock
from mailstack.store.records import NotFound

_LOCKS = cast(Table, MaildropLock.__table__)


def _now_ms(session: Session) -> int:
    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(text("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)"))
        return int(value)
    return int(time.time() * 1000)


def try_lock(session: Session, account_id: int, owner: str, expiry_ms: int) -> bool:
    """Take (or renew) the maildrop for ``owner`` unless another owner's
    lock is still live.  Raises NotFound for an unknown account."""
    now = _now_ms(session)
    row = session.execute(
        select(_LOCKS.c.owner, _LOCKS.c.expires_at_ms)
        .where(_LOCKS.c.account_id == account_id)
        .with_for_update()
    ).first()
    if row is None:
        if session.get(Account, account_id) is None:
            raise NotFound(f"no account {account_id}")
        session.execute(
            insert(_LOCKS).values(account_id=account_id, owner=owner, expires_at_ms=now + expiry_ms)
        )
        return True
    if row.owner != owner and row.expires_at_ms > now:
        return False
    # Ours, or a lapsed lock of a host that died: take it over.
    session.execute(
        update(_LOCKS)
        .where(_LOCKS.c.account_id == account_id)
        .values(owner=owner, expires_at_ms=now + expiry_ms)
    )
    return True


def renew(session: Session, owner: str, account_ids: Sequence[int], expiry_ms: int) -> list[int]:
    """Extend ``owner``'s locks; returns the account ids it no longer holds
    (its lock lapsed and another owner took the maildrop over, or the
    account is gone).  A lapsed lock nobody took is still ``owner``'s row
    and is simply extended.  Rows are never re-created here: a session
    releasing its lock while a renewal is queued must not get it back."""
    now = _now_ms(session)
    renewed = set(
        session.scalars(
            update(_LOCKS)
            .where(_LOCKS.c.owner == owner, _LOCKS.c.account_id.in_(account_ids))
            .values(expires_at_ms=now + expiry_ms)
            .returning(_LOCKS.c.account_id)
        )
    )
    return [account_id for account_id in account_ids if account_id not in renewed]


def release(session: Session, account_id: int, owner: str) -> None:
    session.execute(
        delete(_LOCKS).where(_LOCKS.c.account_id == account_id, _LOCKS.c.owner == owner)
    )
