"""The one async API the protocol services call.

Each method runs one whole unit of work from ``transactions.py`` in a worker
thread (``trio.to_thread.run_sync`` with a CapacityLimiter sized to the
connection pool) and returns frozen records from ``records.py``.  Every write
goes through the group-commit writer (``writer.py``): it returns only after
its transaction committed.  Database outages surface as
:class:`~mailstack.store.records.TemporaryFailure`.

Lifecycle::

    async with open_store(config) as store:   # engine, writer and watcher
        ...

or, for a caller with its own nursery: ``store = await Store.open(config)``,
``await nursery.start(store.run)`` (group commit and change notifications),
and ``await store.aclose()`` at the end.  Without ``run`` every method still
works (each write commits alone) except :meth:`Store.subscribe`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

import trio
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from mailstack import mime
from mailstack.config import Config
from mailstack.store import (
    bulk_reads,
    imap_reads,
    imports,
    maildrop_locks,
    names,
    queue,
    resync,
    retention,
    websocket_reads,
)
from mailstack.store import engine as engines
from mailstack.store import transactions as tx
from mailstack.store.migrate import current_revision_of, head_revision
from mailstack.store.notifications import ChangeNotifications
from mailstack.store.records import (
    AccountRecord,
    AliasRecord,
    AlreadyExists,
    Change,
    DeliveryJob,
    DomainRecord,
    InvalidName,
    MailboxRecord,
    MessageRecord,
    Outgoing,
    QueuedMessageRecord,
    QuotaUsage,
    RecipientOutcome,
    SchemaOutOfDate,
    StoredMessage,
    StoreError,
    TemporaryFailure,
    TooBig,
)
from mailstack.store.sqlite_changes import SqliteFileWatch
from mailstack.store.watcher import ChangeWatcher
from mailstack.store.writer import GroupCommitWriter, Work
from mailstack.store.writer_process import NewMessage, ProcessWriter, applier

FlagMode = Literal["add", "remove", "replace"]

T = TypeVar("T")

# SQLite readers run in parallel under WAL, but the machine's cores and the
# GIL bound what more threads would buy.
SQLITE_READ_THREADS = 4


def _connect(config: Config) -> Engine:
    """Create the engine and check the schema (worker thread)."""
    url = config.database_url
    engine = engines.create_engine(url, config.database)
    try:
        current = current_revision_of(engine)
    except DBAPIError as exc:
        engine.dispose()
        raise TemporaryFailure(f"cannot reach the database: {exc.orig}") from None
    head = head_revision()
    if current != head:
        engine.dispose()
        state = "is empty" if current is None else f"is at revision {current}, not {head}"
        raise SchemaOutOfDate(f"the database {state}: run `mailstack db upgrade`")
    return engine


class Store:
    def __init__(self, config: Config, engine: Engine) -> None:
        self._config = config
        self._engine = engine
        postgresql = not engines.is_sqlite(engine.url)
        self._reads = sessionmaker(engine, expire_on_commit=False)
        self._writes = sessionmaker(engines.writer(engine), expire_on_commit=False)
        if postgresql:
            # One connection stays free for the writer thread.
            total = config.database.pool_size + config.database.max_overflow
            self._limiter = trio.CapacityLimiter(max(1, total - 1))
        else:
            self._limiter = trio.CapacityLimiter(SQLITE_READ_THREADS)
        # Woken by this process's own enqueues so its queue worker starts at
        # once; other processes' mail is found by polling.
        self._queue_kick = trio.Event()
        if postgresql:
            # Other hosts' commits arrive by NOTIFY; the poll is a safety net.
            self._watcher = ChangeWatcher(
                self._changes_batch,
                self._last_change_id,
                poll_seconds=config.database.safety_poll_seconds,
                notifications=ChangeNotifications(
                    engine, engines.pg_connect_args(config.database)
                ).run,
            )
        else:
            # Other processes' commits are seen by watching the database
            # files (sqlite_changes.py); the poll is a safety net.
            database = engine.url.database
            watch = None
            if database and database != ":memory:":
                watch = SqliteFileWatch(
                    Path(database),
                    config.database.change_check_seconds,
                    active=lambda: self._watcher.has_subscribers,
                )
            self._watcher = ChangeWatcher(
                self._changes_batch,
                self._last_change_id,
                notifications=None if watch is None else watch.run,
            )
        self._writer = GroupCommitWriter(
            self._writes,
            max_batch=config.database.max_batch,
            postgresql=postgresql,
            on_commit=self._watcher.kick,
        )
        self._process_writer = (
            ProcessWriter(
                config.database_url,
                config.database,
                config.logging,
                on_commit=self._watcher.kick,
                fallback=self._write_new_in_thread,
            )
            if config.database.writer_process
            else None
        )

    @classmethod
    async def open(cls, config: Config) -> Store:
        """Create the engine (SQLite pragmas / PG pool), check the schema is at head.

        Raises SchemaOutOfDate (run ``mailstack db upgrade``) or
        TemporaryFailure (database unreachable)."""
        engine = await trio.to_thread.run_sync(_connect, config)
        return cls(config, engine)

    async def run(
        self,
        *,
        watch_changes: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the group-commit writer and the change watcher until cancelled.

        ``watch_changes=False`` for a process where nothing will subscribe
        (SMTP only): the watcher would read the change log several times a
        second for nobody, and ``subscribe`` then raises RuntimeError."""
        if self.running:
            raise RuntimeError("Store.run is already running")
        async with trio.open_nursery() as nursery:
            await nursery.start(self._writer.run)
            if watch_changes:
                await nursery.start(self._watcher.run)
            if self._process_writer is not None:
                await nursery.start(self._process_writer.run)
            task_status.started()

    @property
    def running(self) -> bool:
        """True while :meth:`run` (group commit, change notifications) runs.
        ``service.run`` starts ``run`` for its services unless this is True."""
        return self._writer.running

    @property
    def writer_process_pid(self) -> int | None:
        """The child committing new messages (``[database] writer_process``)
        while one is ready, else None (the thread writer commits them)."""
        return None if self._process_writer is None else self._process_writer.ready_pid

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._engine.dispose)

    # -- plumbing ------------------------------------------------------------

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(
            functools.partial(self._read_sync, fn, *args), limiter=self._limiter
        )

    def _read_sync(self, fn: Callable[..., T], *args: object) -> T:
        try:
            with self._reads() as session, session.begin():
                return fn(session, *args)
        except DBAPIError as exc:
            raise TemporaryFailure(f"database unavailable: {exc.orig}") from None

    async def _write(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(session, *args)`` through the group-commit writer."""

        def prepare() -> Callable[[Session], T]:
            return lambda session: fn(session, *args)

        return await self._write_prepared(prepare)

    async def _write_prepared(
        self, prepare: Callable[[], Callable[[Session], T]], *, inserts_only: bool = False
    ) -> T:
        return await self._writer.submit(Work(prepare=prepare, inserts_only=inserts_only))

    # -- domains, accounts, aliases ------------------------------------------

    async def add_domain(self, name: str) -> DomainRecord:
        return await self._write(tx.add_domain, name)

    async def list_domains(self) -> list[DomainRecord]:
        return await self._read(tx.list_domains)

    async def delete_domain(self, name: str) -> None:
        """Raises InUse while the domain still has accounts or aliases."""
        await self._write(tx.delete_domain, name)

    async def is_local_domain(self, name: str) -> bool:
        return await self._read(tx.is_local_domain, name)

    async def add_account(self, address: str, password_hash: str) -> AccountRecord:
        """Create the account and its default mailboxes (records.DEFAULT_MAILBOXES)."""
        return await self._write(tx.add_account, address, password_hash)

    async def get_account(self, address: str) -> AccountRecord | None:
        return await self._read(tx.get_account, address)

    async def get_account_by_id(self, account_id: int) -> AccountRecord | None:
        return await self._read(tx.get_account_by_id, account_id)

    async def list_accounts(self) -> list[AccountRecord]:
        return await self._read(tx.list_accounts)

    async def set_password_hash(self, address: str, password_hash: str) -> None:
        await self._write(tx.set_password_hash, address, password_hash)

    async def set_quota(
        self, address: str, quota_bytes: int | None, quota_messages: int | None
    ) -> None:
        await self._write(tx.set_quota, address, quota_bytes, quota_messages)

    async def delete_account(self, address: str) -> None:
        """Deletes the account with all its mailboxes and messages."""
        await self._write(tx.delete_account, address)

    async def add_alias(self, alias: str, targets: Sequence[str]) -> AliasRecord:
        return await self._write(tx.add_alias, alias, tuple(targets))

    async def list_aliases(self) -> list[AliasRecord]:
        return await self._read(tx.list_aliases)

    async def delete_alias(self, alias: str) -> None:
        await self._write(tx.delete_alias, alias)

    async def resolve_recipient(self, address: str) -> list[AccountRecord] | None:
        """Final accounts for a local address (aliases, catch-all expanded,
        duplicates collapsed), or None when the address is not deliverable."""
        return await self._read(tx.resolve_recipient, address)

    async def addresses_owned_by(self, account_id: int) -> list[str]:
        """The account's address plus every alias that resolves to it only."""
        return await self._read(tx.addresses_owned_by, account_id)

    # -- mailboxes -------------------------------------------------------------

    async def list_mailboxes(self, account_id: int) -> list[MailboxRecord]:
        return await self._read(tx.list_mailboxes, account_id)

    async def get_mailbox(self, account_id: int, name: str) -> MailboxRecord | None:
        """INBOX is matched case-insensitively."""
        return await self._read(tx.get_mailbox, account_id, name)

    async def get_mailbox_by_id(self, mailbox_id: int) -> MailboxRecord | None:
        """Current counters of a mailbox (e.g. to refresh a selected mailbox)."""
        return await self._read(tx.get_mailbox_by_id, mailbox_id)

    async def create_mailbox(
        self, account_id: int, name: str, special_use: str | None = None
    ) -> MailboxRecord:
        return await self._write(tx.create_mailbox, account_id, name, special_use)

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        await self._write(tx.delete_mailbox, account_id, name)

    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        """Renaming INBOX moves its messages to a new mailbox (RFC 9051 6.3.6)."""
        await self._write(tx.rename_mailbox, account_id, old, new)

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        await self._write(tx.set_subscribed, account_id, name, subscribed)

    # -- messages ----------------------------------------------------------------

    async def deliver(
        self, account_ids: Iterable[int], raw: bytes, *, internal_date: datetime | None = None
    ) -> list[StoredMessage]:
        """Store one copy in each account's INBOX; returns after a durable (group) commit.
        Raises OverQuota / TooBig.  All or nothing: if one account is over
        quota nobody gets the message (deliver per account for per-recipient
        results)."""
        if len(raw) > self._config.smtp.max_message_bytes:
            raise TooBig(f"message is larger than {self._config.smtp.max_message_bytes} bytes")
        return await self._write_new(
            NewMessage(tuple(account_ids), raw, internal_date or datetime.now(UTC))
        )

    async def _write_new(self, write: NewMessage) -> list[StoredMessage]:
        if self._process_writer is not None:
            # Takes the thread writer itself while its child is not ready.
            return await self._process_writer.submit(write)
        return await self._write_new_in_thread(write)

    async def _write_new_in_thread(self, write: NewMessage) -> list[StoredMessage]:
        return await self._write_prepared(lambda: applier(write), inserts_only=True)

    async def append(
        self,
        mailbox_id: int,
        raw: bytes,
        *,
        flags: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> StoredMessage:
        """IMAP APPEND; durable (group) commit before returning.  The size
        limit is [imap] max_literal_bytes (the APPENDLIMIT, RFC 7889)."""
        if len(raw) > self._config.imap.max_literal_bytes:
            raise TooBig(f"message is larger than {self._config.imap.max_literal_bytes} bytes")
        flag_set = names.normalize_flags(flags)
        when = internal_date or datetime.now(UTC)

        def prepare() -> Callable[[Session], StoredMessage]:
            analysis = mime.analyze(raw)
            return lambda session: tx.append(session, mailbox_id, raw, analysis, flag_set, when)

        return await self._write_prepared(prepare, inserts_only=True)

    async def append_all(
        self,
        mailbox_id: int,
        messages: Sequence[tuple[bytes, Iterable[str], datetime | None]],
    ) -> list[StoredMessage]:
        """IMAP MULTIAPPEND (RFC 3502): (raw, flags, internal date) each, all
        or none (one transaction), UIDs consecutive in the order given.
        Raises TooBig / OverQuota / InvalidName (a flag) for the whole call."""
        limit = self._config.imap.max_literal_bytes
        if any(len(raw) > limit for raw, _, _ in messages):
            raise TooBig(f"message is larger than {limit} bytes")
        now = datetime.now(UTC)
        checked = [
            (raw, names.normalize_flags(flags), when or now) for raw, flags, when in messages
        ]

        def prepare() -> Callable[[Session], list[StoredMessage]]:
            analyzed = [(raw, mime.analyze(raw), flags, when) for raw, flags, when in checked]
            return lambda session: tx.append_all(session, mailbox_id, analyzed)

        return await self._write_prepared(prepare, inserts_only=True)

    async def list_messages(self, mailbox_id: int, *, since_uid: int = 0) -> list[MessageRecord]:
        """Messages with uid > since_uid, ordered by UID."""
        return await self._read(tx.list_messages, mailbox_id, since_uid)

    async def read_content(self, content_id: int) -> bytes:
        return await self._read(tx.read_content, content_id)

    async def set_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        mode: FlagMode,
        flags: Iterable[str],
        *,
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageRecord], list[int]]:
        """Returns (changed messages with new flags/modseq, uids failing UNCHANGEDSINCE).
        Messages whose flags do not actually change are in neither list."""
        flag_set = names.normalize_flags(flags)
        return await self._write(
            tx.set_flags, mailbox_id, tuple(uids), mode, flag_set, unchanged_since
        )

    async def copy_messages(
        self, src_mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int
    ) -> list[tuple[int, int]]:
        """(source uid, new uid) pairs; raises OverQuota."""
        return await self._write(tx.copy_messages, src_mailbox_id, tuple(uids), dest_mailbox_id)

    async def move_messages(
        self, src_mailbox_id: int, uids: Sequence[int], dest_mailbox_id: int
    ) -> list[tuple[int, int]]:
        """(source uid, new uid) pairs; the source logs expunges (RFC 6851)."""
        return await self._write(tx.move_messages, src_mailbox_id, tuple(uids), dest_mailbox_id)

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Remove \\Deleted messages (restricted to uids when given); returns expunged uids."""
        return await self._write(tx.expunge, mailbox_id, None if uids is None else tuple(uids))

    async def quota_usage(self, account_id: int) -> QuotaUsage:
        return await self._read(tx.quota_usage, account_id)

    async def changes_since(self, change_id: int, *, limit: int = 1000) -> list[Change]:
        """Change-log rows with id > change_id (all accounts), oldest first."""
        return await self._read(tx.changes_since, change_id, limit)

    async def _changes_batch(self, change_id: int, limit: int) -> list[Change]:
        return await self.changes_since(change_id, limit=limit)

    async def _last_change_id(self) -> int:
        return await self._read(tx.last_change_id)

    # -- change notifications ---------------------------------------------------

    def subscribe(self, account_id: int) -> trio.MemoryReceiveChannel[Change]:
        """A bounded channel fed by this process's watcher with the account's changes.

        The channel ends (EndOfChannel) when the subscriber fell too far
        behind or the store stops: subscribe again and resync (watcher.py)."""
        return self._watcher.subscribe(account_id)

    # -- bulk reads (added by the POP3 work; see bulk_reads.py) ---------------
    async def read_contents(self, content_ids: Sequence[int]) -> dict[int, bytes]:
        """Several messages' contents in one read transaction, by content id;
        ids that do not exist are absent.  POP3 reads ahead with this, so
        retrieving a whole maildrop is not one query per message."""
        return await self._read(bulk_reads.read_contents, content_ids)

    # -- POP3 maildrop locks, shared by every host (see maildrop_locks.py) ---
    async def lock_maildrop(self, account_id: int, owner: str, expiry_seconds: float) -> bool:
        """Take the account's maildrop for ``owner`` (a process-unique name)
        for ``expiry_seconds``; False while another owner's lock is live.
        Raises NotFound for an unknown account."""
        try:
            return await self._write(
                maildrop_locks.try_lock, account_id, owner, int(expiry_seconds * 1000)
            )
        except AlreadyExists:
            return False  # another host inserted the row first

    async def renew_maildrop_locks(
        self, owner: str, account_ids: Sequence[int], expiry_seconds: float
    ) -> list[int]:
        """Extend ``owner``'s locks; returns the ids it lost to another owner."""
        return await self._write(
            maildrop_locks.renew, owner, tuple(account_ids), int(expiry_seconds * 1000)
        )

    async def unlock_maildrop(self, account_id: int, owner: str) -> None:
        await self._write(maildrop_locks.release, account_id, owner)

    # -- IMAP reads (added by the IMAP work; see imap_reads.py) -------------
    async def get_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[MessageRecord]:
        """The messages with these UIDs (absent ones skipped), ordered by UID:
        FETCH of a few messages without listing the whole mailbox."""
        return await self._read(imap_reads.messages_by_uid, mailbox_id, tuple(uids))

    async def list_uid_flags(self, mailbox_id: int) -> list[tuple[int, frozenset[str]]]:
        """(UID, flags) of every message, ordered by UID: what SELECT keeps."""
        return await self._read(imap_reads.uid_flags, mailbox_id)

    # -- WebSocket API and capture retention (added by the WebSocket work) ---
    async def list_messages_page(
        self, mailbox_id: int, *, after_uid: int, limit: int
    ) -> list[MessageRecord]:
        """At most ``limit`` messages with uid > after_uid, ordered by UID."""
        return await self._read(websocket_reads.messages_page, mailbox_id, after_uid, limit)

    async def prune_mailbox(
        self, mailbox_id: int, *, keep: int | None, older_than: datetime | None
    ) -> list[int]:
        """Retention: expunge the oldest messages beyond the newest ``keep``
        and those received before ``older_than``, in one transaction (the
        change log records each expunge); returns their UIDs."""
        return await self._write(retention.prune_mailbox, mailbox_id, keep, older_than)

    # -- bulk import (added by the import/export work; see imports.py) -------
    async def append_many(
        self, mailbox_id: int, messages: Sequence[imports.ImportMessage]
    ) -> list[StoredMessage | StoreError]:
        """Append ``messages`` in one group-commit item, UIDs ascending in
        the order given (a message's ``uid`` is kept when it is above every
        UID the mailbox handed out; see imports.py).  A message that is
        refused (TooBig, OverQuota, InvalidName for a flag) is returned as
        its error in its place; the others are stored.  Raises NotFound for
        a missing mailbox."""
        limit = self._config.imap.max_literal_bytes

        def check(message: imports.ImportMessage) -> imports.ImportMessage | StoreError:
            if len(message.raw) > limit:
                return TooBig(f"message is larger than {limit} bytes")
            try:
                flags = names.normalize_flags(message.flags)
            except StoreError as exc:
                return exc
            if message.uid is not None and not 0 < message.uid <= imports.MAX_NUMBER:
                return InvalidName(f"not a UID: {message.uid}")
            return imports.ImportMessage(message.raw, flags, message.internal_date, message.uid)

        def prepare() -> Callable[[Session], list[StoredMessage | StoreError]]:
            items: list[tuple[imports.ImportMessage, mime.MessageAnalysis] | StoreError] = []
            for message in messages:
                checked = check(message)
                items.append(
                    checked
                    if isinstance(checked, StoreError)
                    else (checked, mime.analyze(checked.raw))
                )
            return lambda session: imports.append_many(session, mailbox_id, items)

        return await self._write_prepared(prepare, inserts_only=True)

    async def adopt_uidvalidity(self, mailbox_id: int, uidvalidity: int) -> bool:
        """Take an imported folder's UIDVALIDITY, if the mailbox never held a
        message and no other mailbox has that value; True if it now has it."""
        return await self._write(imports.adopt_uidvalidity, mailbox_id, uidvalidity)

    # -- the outbound queue (see queue.py) -------------------------------------
    async def submit(
        self,
        account_ids: Iterable[int],
        raw: bytes,
        outgoing: Outgoing | None,
        *,
        queued_raw: bytes | None = None,
        internal_date: datetime | None = None,
    ) -> list[StoredMessage]:
        """Submission: ``raw`` in each local account's INBOX and, for the
        other recipients, ``queued_raw`` (default ``raw``) in the outbound
        queue, in one durable (group) commit.  Raises OverQuota / TooBig
        like :meth:`deliver`."""
        if len(raw) > self._config.smtp.max_message_bytes:
            raise TooBig(f"message is larger than {self._config.smtp.max_message_bytes} bytes")
        stored = await self._write_new(
            NewMessage(
                tuple(account_ids),
                raw,
                internal_date or datetime.now(UTC),
                outgoing=outgoing,
                queued_raw=queued_raw,
                submission=True,
            )
        )
        if outgoing is not None and outgoing.recipients:
            self._kick_queue()
        return stored

    async def enqueue(self, outgoing: Outgoing, raw: bytes) -> int:
        """Queue a message for delivery; returns its queue id."""
        message_id = await self._write(queue.enqueue, outgoing, raw, datetime.now(UTC))
        self._kick_queue()
        return message_id

    def _kick_queue(self) -> None:
        self._queue_kick.set()
        self._queue_kick = trio.Event()

    async def queue_kicked(self) -> None:
        """Return once this process queues something (or a retry is asked)."""
        await self._queue_kick.wait()

    async def claim_deliveries(
        self, owner: str, *, lease_seconds: float, limit: int
    ) -> list[DeliveryJob]:
        """Lease up to ``limit`` due (message, domain) jobs for ``owner``."""
        return await self._write(queue.claim, owner, datetime.now(UTC), lease_seconds, limit)

    async def renew_lease(self, owner: str, recipient_ids: Sequence[int], seconds: float) -> int:
        until = datetime.now(UTC) + timedelta(seconds=seconds)
        return await self._write(queue.renew, owner, tuple(recipient_ids), until)

    async def read_queued_content(self, message_id: int) -> bytes:
        return await self._read(queue.read_content, message_id)

    async def record_outcomes(
        self,
        owner: str,
        outcomes: Sequence[RecipientOutcome],
        notices: Sequence[tuple[Outgoing, bytes]] = (),
    ) -> int:
        """Durably record delivery results of recipients ``owner`` still
        leases, queueing ``notices`` (DSNs) in the same commit."""
        written = await self._write(
            queue.record, owner, tuple(outcomes), tuple(notices), datetime.now(UTC)
        )
        if notices:
            self._kick_queue()
        return written

    async def deliver_queued_locally(
        self, owner: str, recipient_ids: Sequence[int], account_ids: Sequence[int], raw: bytes
    ) -> bool:
        """Store a queued message in local INBOXes and mark its recipients
        delivered, in one commit; False if the lease was lost.  Raises
        OverQuota (the recipients stay queued)."""
        when = datetime.now(UTC)
        ids, targets = tuple(recipient_ids), tuple(account_ids)

        def prepare() -> Callable[[Session], bool]:
            analysis = mime.analyze(raw)
            return lambda session: queue.deliver_locally(
                session, owner, ids, targets, raw, analysis, when
            )

        return await self._write_prepared(prepare)

    async def list_queue(self) -> list[QueuedMessageRecord]:
        return await self._read(queue.list_queue)

    async def retry_queue(self, message_id: int | None = None) -> int:
        """Make waiting recipients (of one message, or all) due now;
        raises NotFound for an unknown id.  Returns how many."""
        count = await self._write(queue.retry, message_id, datetime.now(UTC))
        self._kick_queue()
        return count

    async def delete_queued(self, message_id: int) -> int:
        """Drop a queued message (no notification); raises NotFound."""
        return await self._write(queue.delete_message, message_id)

    async def next_queue_due(self) -> datetime | None:
        return await self._read(queue.next_due)

    # -- CONDSTORE / QRESYNC (added by the condstore work; see resync.py) ---
    async def resync_snapshot(self, mailbox_id: int, since: int) -> resync.ResyncSnapshot | None:
        """What a QRESYNC SELECT reports, read in one transaction (None: no
        such mailbox).  ``vanished`` is None when expunges after ``since``
        were pruned from the change log (RFC 7162 3.2.5.2 fallback)."""
        return await self._read(resync.resync_snapshot, mailbox_id, since)

    async def expunged_since(self, mailbox_id: int, since: int) -> list[int] | None:
        """UIDs expunged with MODSEQ above ``since``, or None when the change
        log no longer reaches back that far."""
        return await self._read(resync.expunged_since, mailbox_id, since)

    async def prune_expunge_log(
        self, before: datetime, *, after_id: int = 0, batch: int = 1000
    ) -> tuple[int, int]:
        """Forget expunges logged before ``before`` (each batch its own short
        transaction); returns (rows removed, change-log id to pass as
        ``after_id`` next time, so the next run walks only newer rows)."""
        cursor, removed, more = after_id, 0, True
        while more:
            cursor, count, more = await self._write(resync.prune_expunges, before, cursor, batch)
            removed += count
        return removed, cursor


@asynccontextmanager
async def open_store(config: Config) -> AsyncIterator[Store]:
    """Open the store and run its writer and watcher for the block's duration."""
    store = await Store.open(config)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            try:
                yield store
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await store.aclose()
