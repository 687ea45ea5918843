"""Store delivery throughput: group commit against one commit per message.

    python bench/store_bench.py [--messages N] [--url URL]

Delivers N messages of 1 KiB through ``Store.deliver`` with 1 and with 50
concurrent writers (group commit), then runs a plain loop that commits each
message in its own transaction on an engine with the same settings (same
SQLite pragmas: WAL, synchronous=FULL), and prints the rates and the ratio.
Each phase uses a fresh database (SQLite in a temporary directory unless
--url names a PostgreSQL database, whose tables are dropped between phases).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import trio
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from mailstack import mime
from mailstack.config import Config, DatabaseConfig
from mailstack.store import engine as engines
from mailstack.store import migrate
from mailstack.store import transactions as tx
from mailstack.store.models import Base
from mailstack.store.store import Store, open_store

BODY_LINE = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"


def make_message(i: int) -> bytes:
    head = f"From: bench@remote.test\r\nTo: user@bench.test\r\nSubject: bench {i}\r\n\r\n"
    raw = head.encode()
    while len(raw) < 1024:
        raw += BODY_LINE
    return raw[:1022] + b"\r\n"


async def _prepare(store: Store) -> int:
    await store.add_domain("bench.test")
    return (await store.add_account("user@bench.test", "x")).id


async def store_rate(config: Config, messages: int, writers: int) -> float:
    async with open_store(config) as store:
        account_id = await _prepare(store)
        raws = [make_message(i) for i in range(messages)]
        next_index = iter(range(messages))

        async def writer() -> None:
            for i in next_index:
                await store.deliver([account_id], raws[i])

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(writers):
                nursery.start_soon(writer)
        elapsed = time.perf_counter() - start
        inbox = await store.get_mailbox(account_id, "INBOX")
        assert inbox is not None and inbox.messages == messages
    return messages / elapsed


def commit_per_message_rate(config: Config, messages: int) -> float:
    """The same work with no batching: one transaction (one fsync) each."""
    engine = engines.create_engine(config.database_url, config.database)
    writes = sessionmaker(engines.writer(engine))
    try:
        with writes() as session, session.begin():
            tx.add_domain(session, "bench.test")
            account_id = tx.add_account(session, "user@bench.test", "x").id
        raws = [make_message(i) for i in range(messages)]
        now = datetime.now(UTC)
        start = time.perf_counter()
        for raw in raws:
            analysis = mime.analyze(raw)
            with writes() as session, session.begin():
                tx.deliver(session, [account_id], raw, analysis, now)
        return messages / (time.perf_counter() - start)
    finally:
        engine.dispose()


def fresh_config(base_url: str, workdir: Path, phase: str) -> Config:
    if base_url:
        _reset(engines.create_engine(base_url))
        url = base_url
    else:
        url = f"sqlite:///{workdir / (phase + '.db')}"
    config = Config(data_dir=str(workdir), database=DatabaseConfig(url=url))
    migrate.upgrade(config.database_url)
    return config


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--url", default="", help="PostgreSQL URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        one = trio.run(store_rate, fresh_config(args.url, workdir, "one"), args.messages, 1)
        fifty = trio.run(store_rate, fresh_config(args.url, workdir, "fifty"), args.messages, 50)
        plain = commit_per_message_rate(fresh_config(args.url, workdir, "plain"), args.messages)
    backend = "PostgreSQL" if args.url else "SQLite (WAL, synchronous=FULL)"
    print(f"backend: {backend}; {args.messages} messages of 1 KiB per run")
    print(f"Store.deliver, 1 writer:            {one:8.0f} deliveries/s")
    print(f"Store.deliver, 50 writers:          {fifty:8.0f} deliveries/s")
    print(f"one commit per message (plain loop): {plain:8.0f} deliveries/s")
    print(f"ratio 50 writers / plain loop:      {fifty / plain:8.1f}x")


if __name__ == "__main__":
    main()
