"""Store delivery throughput: group commit against one commit per message.

    python bench/store_bench.py [--messages N] [--url URL]

Delivers N messages of 1 KiB three ways, each into its own fresh database
with the same engine settings (SQLite: WAL, synchronous=FULL, see
mailstack/store/engine.py):

* ``Store.deliver`` with 1 writer at a time,
* ``Store.deliver`` with 50 concurrent writers (group commit),
* a plain loop committing each message in its own transaction (same SQL).

The disk's fsync latency on a shared machine changes from second to second,
and it is exactly what group commit saves, so the three run interleaved in
chunks of ``--chunk`` messages and each total is the sum over its chunks.
The fsync latency is printed too: the slower the fsync, the larger the gain.
With --url (PostgreSQL) the three databases are three schemas of it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import rows  # bench/rows.py: the --json row format
import sqlalchemy
import trio
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from mailstack import mime
from mailstack.config import Config, DatabaseConfig
from mailstack.store import engine as engines
from mailstack.store import migrate
from mailstack.store import transactions as tx
from mailstack.store.store import Store, open_store

BODY_LINE = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
WRITERS = 50


def make_message(i: int) -> bytes:
    head = f"From: bench@remote.test\r\nTo: user@bench.test\r\nSubject: bench {i}\r\n\r\n"
    raw = head.encode()
    while len(raw) < 1024:
        raw += BODY_LINE
    return raw[:1022] + b"\r\n"


@contextmanager
def databases(base_url: str, count: int) -> Iterator[list[str]]:
    """``count`` fresh, migrated databases (SQLite files or PG schemas)."""
    with tempfile.TemporaryDirectory() as tmp:
        if not base_url:
            urls = [f"sqlite:///{Path(tmp) / f'bench{i}.db'}" for i in range(count)]
            for url in urls:
                migrate.upgrade(url)
            yield urls
            return
        admin = sqlalchemy.create_engine(base_url, isolation_level="AUTOCOMMIT")
        schemas = [f"bench_{uuid.uuid4().hex[:10]}" for _ in range(count)]
        try:
            urls = []
            for schema in schemas:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
                in_schema = make_url(base_url).update_query_dict(
                    {"options": f"-csearch_path={schema}"}
                )
                urls.append(in_schema.render_as_string(hide_password=False))
                migrate.upgrade(urls[-1])
            yield urls
        finally:
            with admin.connect() as conn:
                for schema in schemas:
                    conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            admin.dispose()


class PlainLoop:
    """One transaction (one fsync) per message, no batching, no threads."""

    def __init__(self, url: str, database: DatabaseConfig) -> None:
        self._engine = engines.create_engine(url, database)
        self._writes = sessionmaker(engines.writer(self._engine))
        with self._writes() as session, session.begin():
            tx.add_domain(session, "bench.test")
            self._account = tx.add_account(session, "user@bench.test", "x").id

    def run(self, raws: list[bytes]) -> float:
        now = datetime.now(UTC)
        start = time.perf_counter()
        for raw in raws:
            analysis = mime.analyze(raw)
            with self._writes() as session, session.begin():
                tx.deliver(session, [self._account], raw, analysis, now)
        return time.perf_counter() - start

    def close(self) -> None:
        self._engine.dispose()


async def _account(store: Store) -> int:
    await store.add_domain("bench.test")
    return (await store.add_account("user@bench.test", "x")).id


async def timed_deliveries(store: Store, account_id: int, raws: list[bytes], writers: int) -> float:
    pending = iter(raws)

    async def writer() -> None:
        for raw in pending:
            await store.deliver([account_id], raw)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(writers):
            nursery.start_soon(writer)
    return time.perf_counter() - start


def fsync_ms(directory: Path) -> float:
    """One small write + fsync on this disk, in milliseconds."""
    fd = os.open(directory / "fsync.probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        start = time.perf_counter()
        for _ in range(20):
            os.write(fd, b"x" * 1024)
            os.fsync(fd)
        return (time.perf_counter() - start) / 20 * 1000
    finally:
        os.close(fd)


async def run(urls: list[str], messages: int, chunk: int, probe_dir: Path) -> dict[str, float]:
    database = DatabaseConfig()
    totals = {"one": 0.0, "fifty": 0.0, "plain": 0.0, "fsync_ms": 0.0}
    plain = PlainLoop(urls[2], database)
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(
            open_store(Config(database=DatabaseConfig(url=urls[0])))
        )
        fifty = await stack.enter_async_context(
            open_store(Config(database=DatabaseConfig(url=urls[1])))
        )
        one_account, fifty_account = await _account(one), await _account(fifty)
        rounds = 0
        for first in range(0, messages, chunk):
            raws = [make_message(i) for i in range(first, min(first + chunk, messages))]
            totals["plain"] += await trio.to_thread.run_sync(plain.run, raws)
            totals["one"] += await timed_deliveries(one, one_account, raws, 1)
            totals["fifty"] += await timed_deliveries(fifty, fifty_account, raws, WRITERS)
            totals["fsync_ms"] += fsync_ms(probe_dir)
            rounds += 1
        totals["fsync_ms"] /= rounds
    plain.close()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--url", default="", help="PostgreSQL URL (default: SQLite in a temp dir)")
    parser.add_argument("--json", help="also write the result rows here (bench/rows.py)")
    args = parser.parse_args()
    with databases(args.url, 3) as urls, tempfile.TemporaryDirectory() as probe:
        totals = trio.run(run, urls, args.messages, args.chunk, Path(probe))
    rates = {name: args.messages / totals[name] for name in ("one", "fifty", "plain")}
    backend = "PostgreSQL" if args.url else "SQLite (WAL, synchronous=FULL)"
    print(f"backend: {backend}; {args.messages} messages of 1 KiB each way")
    print(f"disk: write+fsync {totals['fsync_ms']:.2f} ms (mean over the chunks)")
    print(f"Store.deliver, 1 writer:             {rates['one']:7.0f} deliveries/s")
    print(f"Store.deliver, {WRITERS} writers:           {rates['fifty']:7.0f} deliveries/s")
    print(f"one commit per message (plain loop): {rates['plain']:7.0f} deliveries/s")
    print(f"ratio {WRITERS} writers / plain loop:       {rates['fifty'] / rates['plain']:7.1f}x")
    rows.write(
        args.json,
        [
            rows.row("store", "deliveries/s, 1 writer", round(rates["one"])),
            rows.row(
                "store",
                f"deliveries/s, {WRITERS} writers (group commit)",
                round(rates["fifty"]),
                {"one commit per message": round(rates["plain"])},
            ),
        ],
    )


if __name__ == "__main__":
    main()
