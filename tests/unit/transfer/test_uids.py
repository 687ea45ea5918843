"""dovecot-uidlist UIDs and UIDVALIDITY survive an import when the target can take them."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from mailstack.config import Config, DatabaseConfig
from mailstack.store import migrate
from mailstack.store.store import Store, open_store
from mailstack.transfer import export, maildir
from mailstack.transfer.importer import import_folders
from mailstack.transfer.progress import Progress, Summary
from tests.unit.transfer import trees

UIDVALIDITY = 1_234_567


def dovecot_folder(root: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "cur" / "1700000001.M1P1.host,S=10:2,S").write_bytes(trees.message(1))
    (root / "cur" / "1700000002.M2P1.host,S=10:2,").write_bytes(trees.message(2))
    (root / "new" / "1700000003.M3P1.host").write_bytes(trees.message(3))
    (root / "dovecot-uidlist").write_text(
        f"3 V{UIDVALIDITY} N20 G0011\n"
        "5 :1700000001.M1P1.host,S=10\n9 W99 :1700000002.M2P1.host,S=10\n"
    )


async def run_import(store: Store, address: str, root: Path) -> Summary:
    account = await store.get_account(address)
    assert account is not None
    folders = await trio.to_thread.run_sync(maildir.folders, root)
    progress = Progress("imported", out=io.StringIO(), err=io.StringIO(), interactive=False)
    return await import_folders(store, account.id, folders, progress, trio.Event())


async def inbox_state(store: Store, address: str) -> tuple[int, int, list[int]]:
    account = await store.get_account(address)
    assert account is not None
    mailbox = await store.get_mailbox(account.id, "INBOX")
    assert mailbox is not None
    uids = [r.uid for r in await store.list_messages(mailbox.id)]
    return mailbox.uidvalidity, mailbox.uidnext, uids


async def test_uids_and_uidvalidity_are_kept(store: Store, tmp_path: Path) -> None:
    dovecot_folder(tmp_path / "Maildir")
    with trio.fail_after(30):
        summary = await run_import(store, "alice@example.test", tmp_path / "Maildir")
        assert summary.messages == 3
        # The new/ message gets N20, what Dovecot would have given it.
        assert await inbox_state(store, "alice@example.test") == (UIDVALIDITY, 21, [5, 9, 20])
        again = await run_import(store, "alice@example.test", tmp_path / "Maildir")
        assert (again.messages, again.duplicates) == (0, 3)
        # A later delivery continues after the kept UIDs; a new mailbox
        # never gets the adopted UIDVALIDITY.
        account = await store.get_account("alice@example.test")
        assert account is not None
        (stored,) = await store.deliver([account.id], trees.message(4))
        assert (stored.uidvalidity, stored.uid) == (UIDVALIDITY, 21)
        created = await store.create_mailbox(account.id, "Later")
        assert created.uidvalidity > UIDVALIDITY


async def test_a_mailbox_that_held_mail_keeps_its_own_uids(store: Store, tmp_path: Path) -> None:
    dovecot_folder(tmp_path / "Maildir")
    with trio.fail_after(30):
        account = await store.get_account("alice@example.test")
        assert account is not None
        await store.deliver([account.id], b"Subject: earlier\r\n\r\nx\r\n")
        before = await inbox_state(store, "alice@example.test")
        await run_import(store, "alice@example.test", tmp_path / "Maildir")
        uidvalidity, uidnext, uids = await inbox_state(store, "alice@example.test")
    assert uidvalidity == before[0] != UIDVALIDITY
    assert uids == [1, 2, 3, 4] and uidnext == 5


async def test_a_uidvalidity_in_use_is_not_taken_twice(store: Store, tmp_path: Path) -> None:
    dovecot_folder(tmp_path / "Maildir")
    with trio.fail_after(30):
        await run_import(store, "alice@example.test", tmp_path / "Maildir")
        await run_import(store, "bob@example.test", tmp_path / "Maildir")
        uidvalidity, _, uids = await inbox_state(store, "bob@example.test")
    assert uidvalidity != UIDVALIDITY and uids == [1, 2, 3]


@pytest.fixture
async def second_store(tmp_path: Path) -> AsyncIterator[Store]:
    directory = tmp_path / "second"
    directory.mkdir()
    url = f"sqlite:///{directory / 'mail.db'}"
    migrate.upgrade(url)
    async with open_store(Config(data_dir=str(directory), database=DatabaseConfig(url=url))) as s:
        await s.add_domain("example.test")
        await s.add_account("alice@example.test", "unused-hash")
        yield s


async def test_export_to_a_new_server_keeps_uids(
    store: Store, second_store: Store, tmp_path: Path
) -> None:
    root = tmp_path / "Maildir"
    trees.write_maildir(root)
    for path in (root / "cur").iterdir():
        if path.is_symlink() or path.stat().st_size == 0:
            os.unlink(path)
    with trio.fail_after(60):
        await run_import(store, "alice@example.test", root)
        account = await store.get_account("alice@example.test")
        assert account is not None
        # Gaps, as expunges leave them.
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        await store.set_flags(inbox.id, [2, 3], "add", ["\\Deleted"])
        await store.expunge(inbox.id, [2, 3])
        out = tmp_path / "exported"
        progress = Progress("exported", out=io.StringIO(), interactive=False)
        await export.export_maildir(store, account.id, out, progress, trio.Event())
        await run_import(second_store, "alice@example.test", out)
        old = {m.name: m for m in await store.list_mailboxes(account.id)}
        new_account = await second_store.get_account("alice@example.test")
        assert new_account is not None
        for mailbox in await second_store.list_mailboxes(new_account.id):
            if not mailbox.messages:
                continue
            source = old[mailbox.name]
            assert mailbox.uidvalidity == source.uidvalidity, mailbox.name
            assert mailbox.uidnext == source.uidnext, mailbox.name
            assert [r.uid for r in await second_store.list_messages(mailbox.id)] == [
                r.uid for r in await store.list_messages(source.id)
            ]
