"""SQLAlchemy 2.0 typed models: the whole schema in one place.

The Alembic revisions in ``migrations/versions`` must describe exactly these
tables (a unit test compares them with autogenerate).  Message content lives
in ``message_contents`` inside the database, so one commit (one fsync) makes a
delivery durable and every PostgreSQL front end sees the same bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so later batch migrations (SQLite table rebuilds)
# can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# Counter row name for UIDVALIDITY values (see transactions.next_uidvalidity).
UIDVALIDITY_COUNTER = "uidvalidity"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# SQLite reuses the largest rowid after a delete unless the table says
# AUTOINCREMENT; ids of accounts, mailboxes and messages appear in the change
# log and in clients' state, so they must never be handed out twice.
NO_ID_REUSE = {"sqlite_autoincrement": True}


class Counter(Base):
    """Named global counters (UIDVALIDITY must never repeat for a name)."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class Domain(Base):
    __tablename__ = "domains"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)  # lower case


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    # As created: local part as given, domain lower case.
    address: Mapped[str] = mapped_column(String(320))
    # Lookup key: the whole address lower case (local parts are matched
    # case-insensitively, as nearly every MTA does despite RFC 5321 2.4).
    address_key: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    quota_messages: Mapped[int | None] = mapped_column(BigInteger)
    # Usage kept in step with messages in the same transactions, so a quota
    # check is one row read rather than a scan of every mailbox.
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    used_messages: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    alias: Mapped[str] = mapped_column(String(320))  # "user@domain" or "@domain"
    alias_key: Mapped[str] = mapped_column(String(320), unique=True)
    targets: Mapped[list[str]] = mapped_column(JSON)


class Mailbox(Base):
    __tablename__ = "mailboxes"
    __table_args__ = (UniqueConstraint("account_id", "name"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(1000))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger)
    highestmodseq: Mapped[int] = mapped_column(BigInteger)
    # Expunges with a MODSEQ at or below this may have been pruned from the
    # change log ([imap] expunged_retention_days); every later one still has
    # its row.  QRESYNC (RFC 7162 3.2.5) answers exactly only above it.
    expunge_log_floor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    subscribed: Mapped[bool] = mapped_column(Boolean)
    special_use: Mapped[str | None] = mapped_column(String(32))


class MessageContent(Base):
    __tablename__ = "message_contents"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "uid"),
        # CONDSTORE CHANGEDSINCE / QRESYNC (RFC 7162) look up by modseq.
        Index("ix_messages_mailbox_id_modseq", "mailbox_id", "modseq"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)
    # Space-separated, sorted; \Seen and \Deleted are mirrored in columns so
    # STATUS UNSEEN and EXPUNGE are plain indexed queries.
    flags: Mapped[str] = mapped_column(Text)
    seen: Mapped[bool] = mapped_column(Boolean)
    deleted: Mapped[bool] = mapped_column(Boolean)
    internal_date: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    size: Mapped[int] = mapped_column(BigInteger)
    # Copies share one content row; it is removed with its last message.
    content_id: Mapped[int] = mapped_column(ForeignKey("message_contents.id"), index=True)
    envelope: Mapped[Any] = mapped_column(JSON)
    bodystructure: Mapped[Any] = mapped_column(JSON)
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    # SORT/THREAD keys derived at delivery (mailstack.imap.sort_keys);
    # NULL for messages stored before revision 0003_imapext.
    sort_keys: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class MaildropLock(Base):
    """POP3's exclusive access to a maildrop (RFC 1939 8), shared by every
    host: ``owner`` names the holding process, which renews
    ``expires_at_ms`` (Unix ms, database clock on PostgreSQL) while the
    session lasts; an expired row is free, so a dead host's locks lapse."""

    __tablename__ = "maildrop_locks"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    owner: Mapped[str] = mapped_column(String(200))
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)


class ChangeLog(Base):
    """Append-only; ``id`` is the global cursor every watcher tails."""

    __tablename__ = "change_log"
    __table_args__ = (
        Index("ix_change_log_mailbox_id_modseq", "mailbox_id", "modseq"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign keys: rows outlive deleted mailboxes and accounts.
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    mailbox_id: Mapped[int] = mapped_column(Integer)
    mailbox_name: Mapped[str] = mapped_column(String(1000))
    modseq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    uid: Mapped[int | None] = mapped_column(BigInteger)
    flags: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class QueuedMessage(Base):
    """A message waiting for delivery to other domains (the outbound queue).

    Its own copy of the bytes: mailbox contents are removed with their last
    message, the queue's with the last recipient that is done."""

    __tablename__ = "queue_messages"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sender: Mapped[str] = mapped_column(String(320))  # "" = null reverse-path (a DSN)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    # What the envelope needs from the next hop (RFC 6531, RFC 6152).
    smtputf8: Mapped[bool] = mapped_column(Boolean)
    eight_bit: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class QueuedRecipient(Base):
    """Per-recipient delivery state: a recipient is delivered at most once
    because its result is committed right after the remote's reply, and only
    the holder of an unexpired lease may deliver it."""

    __tablename__ = "queue_recipients"
    __table_args__ = (
        Index("ix_queue_recipients_state_next_attempt_at", "state", "next_attempt_at"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("queue_messages.id", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(255))  # lower case: one connection per domain
    state: Mapped[str] = mapped_column(String(16))  # "queued", "delivered", "failed"
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_result: Mapped[str] = mapped_column(Text)
    warned: Mapped[bool] = mapped_column(Boolean)
