"""Group commit: many concurrent writes share one transaction and one fsync.

Callers put a :class:`Work` on a bounded channel and wait.  One writer task
takes whatever has queued up (at most ``database.max_batch`` items) and runs
the batch in one worker-thread call and one transaction: each item in its own
SAVEPOINT, so an item that fails (OverQuota, NotFound, ...) is rolled back
alone and the others still commit.  Only after COMMIT returns does each
caller wake with its own result or exception, so "returned" means "durable".

While a batch is committing the next callers queue up, so the batch size
adapts to the load with no timer: a lone writer commits at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailstack.store import transactions as tx
from mailstack.store.records import AlreadyExists, StoreError, TemporaryFailure

T = TypeVar("T")
W = TypeVar("W")

log = logging.getLogger("mailstack.store")

# A failed transaction (lock timeout, PostgreSQL deadlock or serialization
# failure, dropped connection) is retried this many times before the callers
# get TemporaryFailure.
ATTEMPTS = 3
# PostgreSQL: every write transaction takes this advisory lock first, so
# change-log ids become visible in commit order and the watcher's
# "id > cursor" query never skips a row committed late.
PG_WRITE_LOCK = 0x6D61696C


@dataclass(eq=False)
class Work(Generic[T]):
    """One write.  ``prepare`` runs in the worker thread before the
    transaction opens (message parsing) and returns the function to run inside
    it, so the write lock is held only for the SQL."""

    prepare: Callable[[], Callable[[Session], T]]
    # Only inserts new messages (deliver/append): its rows may be written
    # together with the batch's others (transactions.defer_inserts).
    inserts_only: bool = False
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


class _ItemFailed(Exception):
    """An item failed in a batch run without savepoints: rerun with them."""


def run_batch(sessions: sessionmaker[Session], batch: list[Work[Any]], postgresql: bool) -> None:
    """Run ``batch`` in one transaction (worker thread); fills result/error.

    The batch first runs without savepoints (two statements and some
    SQLAlchemy bookkeeping less per item, and items rarely fail).  If an item
    fails, that transaction is rolled back and the batch runs again with a
    SAVEPOINT around each item, so only the failing item is lost."""
    appliers: list[Callable[[Session], Any] | None] = []
    prepare_errors: list[BaseException | None] = []
    for work in batch:
        try:
            appliers.append(work.prepare())
            prepare_errors.append(None)
        except Exception as exc:  # e.g. InvalidName from validation
            appliers.append(None)
            prepare_errors.append(exc)
    isolate = False
    attempt = 1
    while True:
        for work, error in zip(batch, prepare_errors, strict=True):
            work.result, work.error = None, error
        try:
            _transaction(sessions, batch, appliers, postgresql, isolate=isolate)
            return
        except _ItemFailed:
            if sum(apply is not None for apply in appliers) == 1:
                return  # the only item failed: its error is set, nothing to keep
            isolate = True
        except OperationalError as exc:
            if attempt == ATTEMPTS:
                log.warning("store write failed after %d attempts: %s", attempt, exc.orig)
                _fail_all(batch, TemporaryFailure(f"database unavailable: {exc.orig}"))
                return
            time.sleep(0.05 * attempt)
            attempt += 1
        except DBAPIError as exc:
            _fail_all(batch, TemporaryFailure(f"database error: {exc.orig}"))
            return
        except Exception:
            # A bug outside any one item: fail this batch, keep the writer alive.
            log.exception("store batch failed")
            _fail_all(batch, TemporaryFailure("internal store error"))
            return


def _fail_all(batch: list[Work[Any]], failure: TemporaryFailure) -> None:
    for work in batch:
        work.result, work.error = None, failure


def _item_error(exc: Exception) -> BaseException:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, IntegrityError):
        # A concurrent writer in another process took the name first.
        return AlreadyExists(str(exc.orig))
    log.error("store write failed", exc_info=exc)
    return exc


def _transaction(
    sessions: sessionmaker[Session],
    batch: list[Work[Any]],
    appliers: list[Callable[[Session], Any] | None],
    postgresql: bool,
    *,
    isolate: bool,
) -> None:
    with sessions() as session, session.begin():
        if postgresql:
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_WRITE_LOCK})
        else:
            session.connection()  # BEGIN IMMEDIATE: take the write lock now
        if not isolate:
            tx.defer_inserts(session)
        for work, apply in zip(batch, appliers, strict=True):
            if apply is None:
                continue
            if not work.inserts_only:
                tx.flush_deferred(session)
            try:
                if isolate:
                    with session.begin_nested():
                        work.result = apply(session)
                else:
                    work.result = apply(session)
                    session.flush()
            except DBAPIError as exc:
                if not isinstance(exc, IntegrityError):
                    raise  # the whole transaction is in doubt: retry the batch
                work.error = _item_error(exc)
                if not isolate:
                    raise _ItemFailed from exc
            except Exception as exc:
                work.error = _item_error(exc)
                if not isolate:
                    raise _ItemFailed from exc
            # Items mix ORM objects and Core UPDATEs (transactions.py); a
            # clean identity map keeps the next item from seeing stale rows.
            # Deliveries load no objects: nothing to clear (about 3% of
            # their batch's CPU).
            if session.identity_map:
                session.expunge_all()
        tx.flush_deferred(session)


async def enqueue(send: trio.MemorySendChannel[W], item: W) -> None:
    """Queue ``item`` for a writer without a schedule point when there is
    room: the caller's wait for the answer is its schedule point."""
    try:
        send.send_nowait(item)
    except trio.WouldBlock:
        await send.send(item)


def take_batch(first: W, receive: trio.MemoryReceiveChannel[W], max_batch: int) -> list[W]:
    """``first`` and whatever else is already queued, up to ``max_batch``:
    no timer, so the batch is as large as the load made it."""
    batch = [first]
    while len(batch) < max_batch:
        try:
            batch.append(receive.receive_nowait())
        except trio.WouldBlock:
            break
    return batch


class GroupCommitWriter:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_batch: int,
        postgresql: bool,
        on_commit: Callable[[], None],
    ) -> None:
        self._sessions = sessions
        self._max_batch = max(1, max_batch)
        self._postgresql = postgresql
        self._on_commit = on_commit
        # One thread token: this process's writes are serial anyway (SQLite
        # has one writer; PostgreSQL writers take PG_WRITE_LOCK).
        self._limiter = trio.CapacityLimiter(1)
        self._send, self._receive = trio.open_memory_channel[Work[Any]](self._max_batch * 4)
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    async def submit(self, work: Work[T]) -> T:
        """Run ``work`` durably; raises its exception, or TemporaryFailure."""
        if not self._running:
            # No writer task (Store.open without Store.run, e.g. the CLI):
            # commit alone.
            await self._run([work])
        else:
            try:
                await enqueue(self._send, work)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise TemporaryFailure("the store is shutting down") from None
            await work.done.wait()
        if work.error is not None:
            raise work.error
        result: T = work.result
        return result

    async def _run(self, batch: list[Work[Any]]) -> None:
        completed = False
        try:
            await trio.to_thread.run_sync(
                run_batch, self._sessions, batch, self._postgresql, limiter=self._limiter
            )
            completed = True
            self._on_commit()
        finally:
            for work in batch:
                if not completed:
                    work.result, work.error = None, TemporaryFailure("the store is shutting down")
                work.done.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._running = True
        task_status.started()
        try:
            async for first in self._receive:
                await self._run(take_batch(first, self._receive, self._max_batch))
        finally:
            self._running = False
            self._fail_pending()
            self._receive.close()

    def _fail_pending(self) -> None:
        # Items queued but never run: their callers must not wait forever.
        while True:
            try:
                work = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            work.error = TemporaryFailure("the store is shutting down")
            work.done.set()
