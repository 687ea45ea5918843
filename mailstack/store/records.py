"""Frozen records the store hands to services.

No ORM object ever leaves a store worker thread (SQLAlchemy sessions and
their objects are bound to one thread); services only ever see these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# RFC 9051 2.3.2 system flags.  \Recent is not stored (IMAP4rev2 dropped it).
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})

# RFC 6154 special-use mailboxes every new account gets, in this order.
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


class StoreError(Exception):
    """Base of the store's expected failures (each maps to a protocol reply)."""


class NotFound(StoreError):
    """The named domain, account, alias, mailbox or message does not exist."""


class AlreadyExists(StoreError):
    """Creating something whose name is taken."""


class InvalidName(StoreError):
    """A malformed address, domain or mailbox name."""


class OverQuota(StoreError):
    """Storing the message would exceed the account's quota."""


class TooBig(StoreError):
    """The message is larger than the configured maximum."""


class TemporaryFailure(StoreError):
    """The database is unavailable; the caller should answer with a 4xx/[UNAVAILABLE]."""


class SchemaOutOfDate(StoreError):
    """The database schema is missing or older than this code: run `mailstack db upgrade`."""


class InUse(StoreError):
    """Deleting something others still depend on (a domain with accounts or aliases)."""


class ChangeKind(enum.Enum):
    MESSAGE_NEW = "message.new"
    MESSAGE_FLAGS = "message.flags"
    MESSAGE_EXPUNGED = "message.expunged"
    MAILBOX_CREATED = "mailbox.created"
    MAILBOX_DELETED = "mailbox.deleted"
    MAILBOX_RENAMED = "mailbox.renamed"


@dataclass(frozen=True, slots=True)
class DomainRecord:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: int
    address: str
    password_hash: str
    quota_bytes: int | None
    quota_messages: int | None


@dataclass(frozen=True, slots=True)
class AliasRecord:
    id: int
    alias: str  # "user@domain" or "@domain" (catch-all)
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MailboxRecord:
    id: int
    account_id: int
    name: str  # UTF-8, hierarchy delimiter "/"
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool
    special_use: str | None
    messages: int
    unseen: int
    size: int  # sum of message sizes (STATUS=SIZE, RFC 8438)


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message in one mailbox, without its content."""

    id: int
    mailbox_id: int
    uid: int
    modseq: int
    flags: frozenset[str]  # system flags and keywords
    internal_date: datetime  # timezone-aware
    size: int
    content_id: int  # key for Store.read_content
    # Computed once at delivery by mailstack.mime.analyze (JSON-compatible).
    envelope: Any
    bodystructure: Any
    headers: dict[str, str]  # decoded searchable header fields
    sort_keys: dict[str, Any] | None = None  # SORT/THREAD keys (mailstack.imap.sort_keys)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """Where a delivery or append put a message."""

    account_id: int
    mailbox_id: int
    uidvalidity: int
    uid: int
    modseq: int

    def __reduce__(self) -> tuple[Any, ...]:
        # The writer process sends one per message: a constructor call
        # unpickles faster than the dataclass's field-by-field __setstate__.
        return (
            StoredMessage,
            (self.account_id, self.mailbox_id, self.uidvalidity, self.uid, self.modseq),
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the append-only change log."""

    id: int  # global, strictly increasing (the watcher's cursor)
    account_id: int
    mailbox_id: int
    mailbox_name: str
    modseq: int
    kind: ChangeKind
    uid: int | None
    flags: frozenset[str] | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    bytes_used: int
    messages_used: int
    quota_bytes: int | None
    quota_messages: int | None


# -- the outbound queue (see store/queue.py) ----------------------------------


class RecipientState(enum.Enum):
    QUEUED = "queued"  # waiting for (or in) a delivery attempt
    DELIVERED = "delivered"
    FAILED = "failed"  # permanently; the sender was told


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to put in the outbound queue."""

    sender: str  # "" = null reverse-path
    recipients: tuple[str, ...]
    smtputf8: bool = False
    eight_bit: bool = False


@dataclass(frozen=True, slots=True)
class QueuedRecipientRecord:
    id: int
    address: str
    domain: str
    state: RecipientState
    attempts: int
    next_attempt_at: datetime
    leased_until: datetime | None
    last_result: str
    warned: bool


@dataclass(frozen=True, slots=True)
class QueuedMessageRecord:
    """A queued message without its bytes (Store.read_queued_content)."""

    id: int
    sender: str
    size: int
    smtputf8: bool
    eight_bit: bool
    created_at: datetime
    recipients: tuple[QueuedRecipientRecord, ...]


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """Recipients of one message at one domain, leased to one worker:
    what one SMTP connection carries."""

    message: QueuedMessageRecord  # recipients: only the leased ones
    domain: str


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What a delivery attempt decided for one leased recipient.

    ``state`` QUEUED means try again at ``next_attempt_at``."""

    recipient_id: int
    state: RecipientState
    result: str  # the remote's reply or our reason, for `queue list` and logs
    next_attempt_at: datetime | None = None
    warned: bool = False
