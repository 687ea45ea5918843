"""PostgreSQL LISTEN/NOTIFY: one host's commit wakes another host's watcher.

Two Stores on one schema stand for two front-end hosts.  Host B's safety
poll is set to an hour, so anything it hears within the test's deadlines
came by NOTIFY (or by the catch-up read after its listener reconnected).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
import trio

from mailstack.config import Config, DatabaseConfig
from mailstack.store import migrate
from mailstack.store.notifications import APPLICATION_NAME
from mailstack.store.records import Change, ChangeKind
from mailstack.store.store import open_store
from tests.support.pg import PG_URL, fresh_schema

from .store_support import message

pytestmark = pytest.mark.skipif(not PG_URL, reason="MAILSTACK_TEST_PG_URL is not set")

NEVER = 3600.0


@pytest.fixture
def pg_config(tmp_path: Path) -> Iterator[Config]:
    with fresh_schema("test_notify") as url:
        migrate.upgrade(url)
        yield Config(
            data_dir=str(tmp_path), database=DatabaseConfig(url=url, safety_poll_seconds=NEVER)
        )


async def next_new_message(changes: trio.MemoryReceiveChannel[Change]) -> Change:
    async for change in changes:
        if change.kind is ChangeKind.MESSAGE_NEW:
            return change
    raise AssertionError("the change stream ended")


def terminate_listeners(url: str) -> int:
    """Kill the listening connections of this schema, as a database restart would."""
    schema = sqlalchemy.engine.make_url(url).query["options"].split("=", 1)[1]
    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    sqlalchemy.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = :name"
                    ),
                    {"name": f"{APPLICATION_NAME} {schema}"},
                ).all()
            )
    finally:
        admin.dispose()


async def test_commit_on_one_host_wakes_the_other(pg_config: Config) -> None:
    async with open_store(pg_config) as host_a, open_store(pg_config) as host_b:
        await host_a.add_domain("example.test")
        alice = await host_a.add_account("alice@example.test", "hash")
        changes = host_b.subscribe(alice.id)
        for n in range(5):
            stored = await host_a.deliver([alice.id], message(f"n{n}"))
            with trio.fail_after(1):
                change = await next_new_message(changes)
            assert change.uid == stored[0].uid


async def test_listener_reconnects_after_losing_its_connection(pg_config: Config) -> None:
    async with open_store(pg_config) as host_a, open_store(pg_config) as host_b:
        await host_a.add_domain("example.test")
        alice = await host_a.add_account("alice@example.test", "hash")
        changes = host_b.subscribe(alice.id)
        with trio.fail_after(10):
            while True:
                if await trio.to_thread.run_sync(terminate_listeners, pg_config.database_url):
                    break
                await trio.sleep(0.05)  # not connected yet
        stored = await host_a.deliver([alice.id], message("after the cut"))
        # Reconnecting waits at most a few hundred ms, then reads what it missed.
        with trio.fail_after(5):
            change = await next_new_message(changes)
        assert change.uid == stored[0].uid
        stored = await host_a.deliver([alice.id], message("listening again"))
        with trio.fail_after(1):
            change = await next_new_message(changes)
        assert change.uid == stored[0].uid
