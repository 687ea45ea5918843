"""Store.read_contents (the POP3 read-ahead) against a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import trio

from mailstack.config import Config
from mailstack.store import migrate
from mailstack.store.store import Store


async def test_read_contents_returns_existing_ids_only(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path))
    await trio.to_thread.run_sync(migrate.upgrade, config.database_url)
    store = await Store.open(config)
    try:
        await store.add_domain("example.test")
        account = await store.add_account("a@example.test", "not-a-real-hash")
        raws = [b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(3)]
        for raw in raws:
            await store.deliver([account.id], raw)
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        records = await store.list_messages(inbox.id)
        ids = [r.content_id for r in records]
        assert await store.read_contents(ids) == dict(zip(ids, raws, strict=True))
        assert await store.read_contents([ids[1], 999_999, ids[1]]) == {ids[1]: raws[1]}
        assert await store.read_contents([]) == {}
    finally:
        await store.aclose()
