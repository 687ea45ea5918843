"""The SQLite file watch that wakes the change watcher on other processes' commits."""

from __future__ import annotations

from pathlib import Path

import trio

from mailstack.store.sqlite_changes import SqliteFileWatch


async def test_a_write_to_the_wal_wakes_the_watcher(tmp_path: Path) -> None:
    database = tmp_path / "mail.db"
    database.write_bytes(b"db")
    woken = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(SqliteFileWatch(database, 0.005).run, woken.set)
            await trio.sleep(0.05)
            assert not woken.is_set()  # nothing changed, nothing to read
            (tmp_path / "mail.db-wal").write_bytes(b"frame")
            await woken.wait()
            nursery.cancel_scope.cancel()
