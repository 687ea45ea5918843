"""The one async API the protocol services call.

INTERFACE DRAFT (to be implemented by the store work): each method runs one
whole unit of work in a worker thread via
``trio.to_thread.run_sync(fn, ..., limiter=self._limiter)`` and returns records
from ``records.py``.  Writes that store messages go through the group-commit
writer.  Method names and signatures here are what the protocol services code
against; extend, do not rename.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

import trio

from mailstack.config import Config
from mailstack.store.records import (
    AccountRecord,
    AliasRecord,
    Change,
    DomainRecord,
    MailboxRecord,
    MessageRecord,
    QuotaUsage,
    StoredMessage,
)

FlagMode = Literal["add", "remove", "replace"]


class Store:
    @classmethod
    async def open(cls, config: Config) -> Store:
        """Create the engine (SQLite pragmas / PG pool), check the schema is at head."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    # -- domains, accounts, aliases ------------------------------------
    async def add_domain(self, name: str) -> DomainRecord: ...
    async def list_domains(self) -> list[DomainRecord]: ...
    async def delete_domain(self, name: str) -> None: ...
    async def is_local_domain(self, name: str) -> bool: ...

    async def add_account(self, address: str, password_hash: str) -> AccountRecord:
        """Create the account and its default mailboxes (records.DEFAULT_MAILBOXES)."""
        raise NotImplementedError

    async def get_account(self, address: str) -> AccountRecord | None: ...
    async def get_account_by_id(self, account_id: int) -> AccountRecord | None: ...
    async def list_accounts(self) -> list[AccountRecord]: ...
    async def set_password_hash(self, address: str, password_hash: str) -> None: ...
    async def set_quota(
        self, address: str, quota_bytes: int | None, quota_messages: int | None
    ) -> None: ...
    async def delete_account(self, address: str) -> None: ...

    async def add_alias(self, alias: str, targets: Sequence[str]) -> AliasRecord: ...
    async def list_aliases(self) -> list[AliasRecord]: ...
    async def delete_alias(self, alias: str) -> None: ...

    async def resolve_recipient(self, address: str) -> list[AccountRecord] | None:
        """Final accounts for a local address (aliases, catch-all expanded,
        duplicates collapsed), or None when the address is not deliverable."""
        raise NotImplementedError

    async def addresses_owned_by(self, account_id: int) -> list[str]:
        """The account's address plus every alias that resolves to it only."""
        raise NotImplementedError

    # -- mailboxes -------------------------------------------------------
    async def list_mailboxes(self, account_id: int) -> list[MailboxRecord]: ...
    async def get_mailbox(self, account_id: int, name: str) -> MailboxRecord | None:
        """INBOX is matched case-insensitively."""
        raise NotImplementedError

    async def create_mailbox(
        self, account_id: int, name: str, special_use: str | None = None
    ) -> MailboxRecord: ...
    async def delete_mailbox(self, account_id: int, name: str) -> None: ...
    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        """Renaming INBOX moves its messages to a new mailbox (RFC 9051 6.3.6)."""
        raise NotImplementedError

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None: ...

    # -- messages ---------------------------------------------------------
    async def deliver(
        self, account_ids: Iterable[int], raw: bytes, *, internal_date: datetime | None = None
    ) -> list[StoredMessage]:
        """Store one copy in each account's INBOX; returns after a durable (group) commit.
        Raises OverQuota / TooBig."""
        raise NotImplementedError

    async def append(
        self,
        mailbox_id: int,
        raw: bytes,
        *,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> StoredMessage:
        """IMAP APPEND; durable (group) commit before returning."""
        raise NotImplementedError

    async def list_messages(self, mailbox_id: int, *, since_uid: int = 0) -> list[MessageRecord]:
        """Messages with uid > since_uid, ordered by UID."""
        raise NotImplementedError

    async def read_content(self, content_id: int) -> bytes: ...

    async def set_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageRecord], list[int]]:
        """Returns (changed messages with new flags/modseq, uids failing UNCHANGEDSINCE)."""
        raise NotImplementedError

    async def copy_messages(
        self, src_mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int
    ) -> list[tuple[int, int]]:
        """(source uid, new uid) pairs; raises OverQuota."""
        raise NotImplementedError

    async def move_messages(
        self, src_mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int
    ) -> list[tuple[int, int]]: ...

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Remove \\Deleted messages (restricted to uids when given); returns expunged uids."""
        raise NotImplementedError

    async def quota_usage(self, account_id: int) -> QuotaUsage: ...

    async def changes_since(self, change_id: int, *, limit: int = 1000) -> list[Change]:
        """Change-log rows with id > change_id (all accounts), oldest first."""
        raise NotImplementedError

    # -- change notifications ---------------------------------------------
    def subscribe(self, account_id: int) -> trio.MemoryReceiveChannel[Change]:
        """A bounded channel fed by this process's watcher with the account's changes."""
        raise NotImplementedError
