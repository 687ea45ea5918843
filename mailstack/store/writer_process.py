"""Group commit for new messages in a child process (``[database] writer_process``).

Why a process: the group-commit writer thread (``writer.py``) shares the
GIL with the event loop.  Each SQLite statement releases the GIL and each
socket call of the loop does too, so under load the two threads hand the
GIL back and forth several times per message; on a small virtual machine
each hand-over costs a futex wake and a context switch, and the SMTP
listener spent more CPU on that than on the SQL itself (bench/smtp_bench.py).
A child process has its own interpreter: deliveries are pickled to it over
a socketpair as soon as they are queued, it commits whatever has arrived
by the time the previous commit ends with the same :func:`writer.run_batch`
(one transaction, one fsync per batch) and answers after COMMIT, so
"returned" still means "durable".

Only new messages go this way (:class:`NewMessage`: SMTP delivery and
submission, both insert-only); every other write stays with the thread
writer, and the two serialize on the database's write lock (SQLite's BEGIN
IMMEDIATE, PostgreSQL's advisory lock) like two processes sharing a store.

Lifecycle: :meth:`ProcessWriter.run` starts the child (``python -m
mailstack.store.writer_process FD``) when the first new message arrives,
and restarts it if it dies.  Writes that find no child ready, or were
still queued when it died, go to the ``fallback`` (the thread writer), so a
child that cannot start costs speed, never mail.  Writes sent to the child
and not yet answered when it dies fail with TemporaryFailure (the client
retries; they may or may not have committed, as after any crash between
COMMIT and the reply).  The child ignores SIGINT, SIGTERM and SIGHUP, which
a terminal or systemd sends to the whole process group: it keeps
committing while the parent drains its sessions, and exits when the parent
closes the socket (or dies).
"""

from __future__ import annotations

import logging
import math
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import trio
from sqlalchemy.orm import Session, sessionmaker

from mailstack import mime
from mailstack.config import DatabaseConfig, LoggingConfig
from mailstack.gc_tuning import settle_after_startup
from mailstack.plain_stream import PlainStream
from mailstack.store import engine as engines
from mailstack.store import queue
from mailstack.store import transactions as tx
from mailstack.store.records import Outgoing, StoredMessage, StoreError, TemporaryFailure
from mailstack.store.writer import Work, enqueue, run_batch, take_batch

log = logging.getLogger("mailstack.store")

_LENGTH = struct.Struct("!I")
# A child that dies this soon after its start is not restarted at once.
RESTART_DELAY_SECONDS = 1.0
# A child that keeps failing at once waits twice as long each time, up to this.
MAX_RESTART_DELAY_SECONDS = 60.0
# What the child runs (the module's own entry point, at the end of this file).
CHILD_COMMAND = (sys.executable, "-m", "mailstack.store.writer_process")
# What one read from the child's socket asks for.
FRAME_RECEIVE_BYTES = 65536
# Shutdown: how long the child gets to finish after its socket closed.
EXIT_SECONDS = 10.0


# Not frozen, made per session or message: see smtp/commands.py.
@dataclass(slots=True)
class NewMessage:
    """One insert-only write: a copy in each account's INBOX and, for
    submission, the outbound queue entry (``outgoing``) in the same commit."""

    account_ids: tuple[int, ...]
    raw: bytes
    internal_date: datetime
    outgoing: Outgoing | None = None
    queued_raw: bytes | None = None  # submission: the copy that leaves
    submission: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled for every message: an aware datetime pickles through
        # several Python-level reduce calls (two thirds of the frame's
        # instructions); whole microseconds since the epoch are one int.
        when = (self.internal_date - _EPOCH) // _MICROSECOND
        fields = (self.account_ids, self.raw, when, self.outgoing, self.queued_raw, self.submission)
        return (_unpickle_new_message, fields)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _unpickle_new_message(
    account_ids: tuple[int, ...],
    raw: bytes,
    microseconds: int,
    outgoing: Outgoing | None,
    queued_raw: bytes | None,
    submission: bool,
) -> NewMessage:
    when = _EPOCH + timedelta(microseconds=microseconds)
    return NewMessage(account_ids, raw, when, outgoing, queued_raw, submission)


def applier(write: NewMessage) -> Callable[[Session], list[StoredMessage]]:
    """Parse the message (outside the transaction) and return the function
    that inserts it; the thread writer and the child both use this."""
    analysis = mime.analyze(write.raw)
    if write.submission:
        queued = write.raw if write.queued_raw is None else write.queued_raw
        return lambda session: queue.submit(
            session,
            write.account_ids,
            write.raw,
            analysis,
            write.outgoing,
            queued,
            write.internal_date,
        )
    return lambda session: tx.deliver(
        session, write.account_ids, write.raw, analysis, write.internal_date
    )


# -- framing: a 4-byte length, then a pickle (both ends are this program) ------


def _frame(value: object) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


_INCOMPLETE = object()


def _take_frame(buffer: bytearray) -> Any:
    """Remove the first whole frame from ``buffer`` and return its value;
    ``_INCOMPLETE`` while its bytes have not all arrived."""
    if len(buffer) < _LENGTH.size:
        return _INCOMPLETE
    end = _LENGTH.size + _LENGTH.unpack_from(buffer)[0]
    if len(buffer) < end:
        return _INCOMPLETE
    value = pickle.loads(memoryview(buffer)[_LENGTH.size : end])
    del buffer[:end]
    return value


def _receive_blocking(sock: socket.socket, buffer: bytearray) -> Any:
    while (value := _take_frame(buffer)) is _INCOMPLETE:
        chunk = sock.recv(FRAME_RECEIVE_BYTES)
        if not chunk:
            raise EOFError("the parent closed the socket")
        buffer += chunk
    return value


def _receive_writes(sock: socket.socket, buffer: bytearray, limit: int) -> list[NewMessage]:
    """The writes of the next frame (waiting for one if need be) and of the
    frames sent after it that are already here, up to about ``limit``
    writes: what the parent queued while the last batch committed is the
    next batch.  Nothing is read beyond that, so a child that falls behind
    lets the socket fill and the parent's senders wait (its memory stays
    bounded)."""
    writes: list[NewMessage] = _receive_blocking(sock, buffer)
    while len(writes) < limit:
        more = _take_frame(buffer)
        if more is not _INCOMPLETE:
            writes += more
            continue
        try:
            chunk = sock.recv(FRAME_RECEIVE_BYTES, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        if not chunk:
            break  # the parent closed the socket: the next receive says so
        buffer += chunk
    return writes


# -- the child -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Setup:
    url: str
    database: DatabaseConfig
    logging: LoggingConfig


def _portable(error: BaseException | None) -> BaseException | None:
    """Store errors cross the socket as they are; anything else (a bug, an
    exception that may not unpickle) as TemporaryFailure, logged here."""
    if error is None or isinstance(error, StoreError):
        return error
    log.error("writer process: write failed", exc_info=error)
    return TemporaryFailure("internal store error")


def child_main(fd: int) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    buffer = bytearray()
    setup: _Setup = _receive_blocking(sock, buffer)
    from mailstack.logs import setup_logging

    setup_logging(setup.logging)
    engine = engines.create_engine(setup.url, setup.database)
    sessions = sessionmaker(engines.writer(engine), expire_on_commit=False)
    postgresql = not engines.is_sqlite(setup.url)
    settle_after_startup()
    sock.sendall(_frame("ready"))
    while True:
        try:
            writes = _receive_writes(sock, buffer, setup.database.max_batch)
        except (EOFError, OSError):
            break  # the parent closed the socket or died
        batch: list[Work[Any]] = [
            Work(prepare=partial(applier, write), inserts_only=True) for write in writes
        ]
        run_batch(sessions, batch, postgresql)
        try:
            sock.sendall(_frame([(work.result, _portable(work.error)) for work in batch]))
        except OSError:
            break  # the parent died during the batch: it was committed, nobody waits
    engine.dispose()


# -- the parent ------------------------------------------------------------------


class _FrameReader:
    """The frames the child sends, in order (several may come in one read)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> Any:
        while (value := _take_frame(self._buffer)) is _INCOMPLETE:
            chunk = await self._stream.receive_some(FRAME_RECEIVE_BYTES)
            if not chunk:
                raise EOFError("the writer process exited")
            self._buffer += chunk
        return value


class _NotSent(Exception):
    """The write never reached a child: the fallback takes it."""


@dataclass(eq=False, slots=True)
class _Pending:
    write: NewMessage
    done: trio.Event
    result: list[StoredMessage] | None = None
    error: BaseException | None = None


class ProcessWriter:
    def __init__(
        self,
        url: str,
        database: DatabaseConfig,
        logging_config: LoggingConfig,
        *,
        on_commit: Callable[[], None],
        fallback: Callable[[NewMessage], Awaitable[list[StoredMessage]]],
    ) -> None:
        self._setup = _Setup(url, database, logging_config)
        self._fallback = fallback
        self._max_batch = max(1, database.max_batch)
        self._on_commit = on_commit
        self._send, self._receive = trio.open_memory_channel[_Pending](self._max_batch * 4)
        self._stream: PlainStream | None = None
        self._child_pid: int | None = None
        # Set by the first new message: a process that never receives mail
        # (IMAP or POP3 only) never starts a child.
        self._wanted = trio.Event()

    @property
    def ready_pid(self) -> int | None:
        """The child's process id while it takes writes."""
        return self._child_pid if self._stream is not None else None

    async def submit(self, write: NewMessage) -> list[StoredMessage]:
        """Commit ``write`` durably (in the child, else by the fallback);
        raises its store error or TemporaryFailure."""
        if self._stream is None:
            self._wanted.set()
            return await self._fallback(write)
        pending = _Pending(write, trio.Event())
        try:
            await enqueue(self._send, pending)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return await self._fallback(write)
        await pending.done.wait()
        if isinstance(pending.error, _NotSent):
            return await self._fallback(write)
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await self._wanted.wait()
            delay = RESTART_DELAY_SECONDS
            while True:
                started = trio.current_time()
                try:
                    await self._serve_one_child()
                except Exception as exc:  # whatever the child did, the server goes on
                    # A child that died young waits before the next start (and
                    # twice as long each time): never spin on a broken child.
                    wait = delay if trio.current_time() - started < delay else 0.0
                    log.warning(
                        "writer process failed (%s); the writer thread takes over,"
                        " next start in %.0f s",
                        exc,
                        wait,
                    )
                    self._hand_back_queued()
                    await trio.sleep(wait)
                    delay = (
                        min(delay * 2, MAX_RESTART_DELAY_SECONDS) if wait else RESTART_DELAY_SECONDS
                    )
        finally:
            self._receive.close()
            self._hand_back_queued()

    async def _serve_one_child(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            process = await trio.lowlevel.open_process(
                [*CHILD_COMMAND, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                # Logs go to the inherited stderr (the journal); stdin and
                # stdout stay the server's alone (a reader of the server's
                # stdout sees EOF when the server ends, not its child).
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        stream = PlainStream(ours)
        answers = _FrameReader(stream)
        self._child_pid = process.pid
        try:
            await stream.send_all(_frame(self._setup))
            if await answers.next() != "ready":
                raise EOFError("the writer process did not start")
            log.info("writer process %d started", process.pid)
            self._stream = stream
            await self._serve_batches(stream, answers)
        finally:
            self._stream = None
            self._child_pid = None
            await self._stop(stream, process)

    async def _serve_batches(self, stream: PlainStream, answers: _FrameReader) -> None:
        """Send each batch as soon as it is queued, without waiting for the
        answer to the one before: the child finds what was queued during a
        commit already in its socket when the commit ends, so this
        process's scheduling delay is not part of every commit.  Answers
        come back in the order the writes were sent, each covering one or
        more batches."""
        # Unbounded, yet what is in flight stays small: the child reads no
        # further than its next batch, so a full socket stops the sender.
        sent_send, sent_receive = trio.open_memory_channel[list[_Pending]](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._settle_answers, answers, sent_receive)
            with sent_send:
                async for first in self._receive:
                    batch = take_batch(first, self._receive, self._max_batch)
                    try:
                        frame = _frame([p.write for p in batch])
                    except Exception:
                        # A bug, not the child's failure: the thread
                        # writer takes these writes, the child stays.
                        log.exception("writer process: a batch could not be pickled")
                        self._settle(batch, _NotSent())
                        continue
                    # Owed before it is sent: the answer may come back
                    # before send_all returns.
                    sent_send.send_nowait(batch)
                    # Shielded: a frame cut short would cost the whole
                    # batch a retry.
                    with trio.CancelScope(shield=True):
                        try:
                            await stream.send_all(frame)
                        except BaseException:
                            # The child never had the whole frame: nothing
                            # of it is committed.
                            self._settle(batch, _NotSent())
                            raise

    async def _settle_answers(
        self, answers: _FrameReader, sent: trio.MemoryReceiveChannel[list[_Pending]]
    ) -> None:
        """Hand each answer to its waiting write.  Shielded: a write the
        child may be committing gets its answer even while the server
        stops, as the thread writer's does; ends once the sender is done
        and nothing is owed."""
        owed: deque[_Pending] = deque()
        with trio.CancelScope(shield=True):
            try:
                while True:
                    if not owed:
                        try:
                            owed.extend(await sent.receive())
                        except trio.EndOfChannel:
                            return
                    results = await answers.next()
                    for result, error in results:
                        if not owed:
                            try:
                                owed.extend(sent.receive_nowait())
                            except trio.WouldBlock:
                                raise EOFError(
                                    "the writer process answered for nothing sent"
                                ) from None
                        pending = owed.popleft()
                        pending.result, pending.error = result, error
                        pending.done.set()
                    self._on_commit()
            except BaseException:
                failure = TemporaryFailure("the writer process failed")
                self._settle([p for p in owed if not p.done.is_set()], failure)
                while True:
                    try:
                        batch = sent.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    self._settle([p for p in batch if not p.done.is_set()], failure)
                raise

    @staticmethod
    def _settle(batch: list[_Pending], error: BaseException) -> None:
        for pending in batch:
            pending.error = error
            pending.done.set()

    @staticmethod
    async def _stop(stream: PlainStream, process: trio.Process) -> None:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)  # the child's EOF: it exits
            with trio.move_on_after(EXIT_SECONDS):
                await process.wait()
                return
            process.kill()
            await process.wait()

    def _hand_back_queued(self) -> None:
        """Writes still queued for a child that is gone go to the fallback."""
        while True:
            try:
                pending = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            pending.error = _NotSent()
            pending.done.set()


if __name__ == "__main__":
    child_main(int(sys.argv[1]))
