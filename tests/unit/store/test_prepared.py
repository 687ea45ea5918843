"""Batch delivery runs its statements on the DB-API cursor (store/prepared.py):
what it stores must be exactly what SQLAlchemy's own execution stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from mailstack import mime
from mailstack.store import engine as engines
from mailstack.store import migrate
from mailstack.store import transactions as tx
from mailstack.store.models import Account, ChangeLog, Message, MessageContent
from mailstack.store.records import ChangeKind

RAW = (
    "From: Zoë <zoe@example.org>\r\nTo: alice@example.test\r\n"
    "Subject: =?utf-8?q?caf=C3=A9?=\r\nDate: Sun, 29 Nov 2026 10:00:00 +0100\r\n"
    "Message-ID: <m1@example.org>\r\n\r\nbody\r\n"
).encode()
WHEN = datetime(2026, 11, 29, 9, 0, 1, 123456, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    migrate.upgrade(db_url)
    created = engines.create_engine(db_url)
    yield created
    created.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engines.writer(engine), expire_on_commit=False)


@pytest.fixture
def account_id(sessions: sessionmaker[Session]) -> int:
    with sessions() as session, session.begin():
        tx.add_domain(session, "example.test")
        return tx.add_account(session, "alice@example.test", "hash").id


def _deliver(
    sessions: sessionmaker[Session], account_id: int, raws: list[bytes], *, batch: bool
) -> None:
    with sessions() as session, session.begin():
        if batch:
            tx.defer_inserts(session)
        for raw in raws:
            tx.deliver(session, [account_id], raw, mime.analyze(raw), WHEN)
        tx.flush_deferred(session)


def _stored(sessions: sessionmaker[Session]) -> list[tuple[dict[str, Any], bytes, dict[str, Any]]]:
    """(message columns, content, change-log columns) per message, by uid;
    ids, uids and modseqs left out (they differ by design)."""
    skip = {"id", "uid", "modseq", "content_id", "created_at", "mailbox_id"}
    with sessions() as session:
        messages = session.scalars(select(Message).order_by(Message.uid)).all()
        result = []
        for message in messages:
            columns = {
                c.key: getattr(message, c.key)
                for c in Message.__table__.columns
                if c.key not in skip
            }
            content = session.get_one(MessageContent, message.content_id).data
            change = session.scalars(
                select(ChangeLog).where(
                    ChangeLog.uid == message.uid, ChangeLog.kind == ChangeKind.MESSAGE_NEW.value
                )
            ).one()
            logged = {
                c.key: getattr(change, c.key)
                for c in ChangeLog.__table__.columns
                if c.key not in skip
            }
            result.append((columns, content, logged))
        return result


def test_a_batch_stores_what_one_by_one_delivery_stores(
    sessions: sessionmaker[Session], account_id: int
) -> None:
    _deliver(sessions, account_id, [RAW], batch=False)
    _deliver(sessions, account_id, [RAW], batch=True)
    alone, batched = _stored(sessions)
    assert batched == alone
    columns, content, _ = batched
    assert content == RAW
    stored_date = columns["internal_date"]
    assert (stored_date if stored_date.tzinfo else stored_date.replace(tzinfo=UTC)) == WHEN
    assert columns["headers"]["subject"] == "café"
    assert columns["seen"] is False and columns["deleted"] is False
    # Byte for byte as the database holds them, not only as read back.
    with sessions() as session:
        raw_rows = session.connection().exec_driver_sql(
            "SELECT internal_date, seen, deleted, flags, envelope, bodystructure, headers,"
            " sort_keys FROM messages ORDER BY uid"
        )
        first, second = [tuple(str(value) for value in row) for row in raw_rows]
    assert second == first


def test_each_message_of_a_batch_gets_its_own_content_and_usage(
    sessions: sessionmaker[Session], account_id: int
) -> None:
    raws = [RAW.replace(b"body", f"body {n}".encode()) for n in range(3)]
    _deliver(sessions, account_id, raws, batch=True)
    assert [content for _, content, _ in _stored(sessions)] == raws
    with sessions() as session:
        account = session.get_one(Account, account_id)
        assert (account.used_messages, account.used_bytes) == (3, sum(map(len, raws)))


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500)
@given(_JSON_VALUES)
def test_the_json_columns_store_what_json_dumps_writes(value: Any) -> None:
    # The engines' json_serializer: the same text as json.dumps, NaN and
    # non-ASCII text included, so the stored form does not change.
    assert engines.json_text(value) == json.dumps(value)
