"""Import -> export -> import keeps content, flags, internal dates and folder names."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import trio

from mailstack.store.store import Store
from mailstack.transfer import export, maildir, mbox
from mailstack.transfer.importer import import_folders
from mailstack.transfer.progress import Progress, Summary
from mailstack.transfer.source import to_crlf
from tests.unit.transfer import trees


def quiet(verb: str) -> Progress:
    return Progress(verb, out=io.StringIO(), err=io.StringIO(), interactive=False)


async def account_id(store: Store, address: str) -> int:
    account = await store.get_account(address)
    assert account is not None
    return account.id


async def import_maildir(store: Store, address: str, root: Path) -> Summary:
    folders = await trio.to_thread.run_sync(maildir.folders, root)
    return await import_folders(
        store, await account_id(store, address), folders, quiet("imported"), trio.Event()
    )


async def import_mbox(store: Store, address: str, path: Path) -> Summary:
    folders = await trio.to_thread.run_sync(mbox.folders, path, None)
    return await import_folders(
        store, await account_id(store, address), folders, quiet("imported"), trio.Event()
    )


def without_empty(snapshot: dict[str, list[tuple[str, frozenset[str], int]]]) -> dict[str, object]:
    return {name: messages for name, messages in snapshot.items() if messages}


async def test_maildir_import_reads_folders_flags_dates_and_reports_bad_files(
    store: Store, tmp_path: Path
) -> None:
    root = tmp_path / "Maildir"
    expected = trees.write_maildir(root)
    with trio.fail_after(60):
        summary = await import_maildir(store, "alice@example.test", root)
    assert summary.messages == sum(len(v) for v in expected.values())
    assert summary.duplicates == 0
    assert len(summary.errors) == 2
    assert any("dangling" in e for e in summary.errors)
    assert any("empty" in e for e in summary.errors)
    got = await trees.snapshot(store, "alice@example.test")
    for name, messages in expected.items():
        assert [(f, t) for _, f, t in got[name]] == [(m.flags, m.mtime) for m in messages], name
    # Stored with CRLF line ends; the 10 MiB message arrived whole.
    source = (root / ".Work" / "cur").iterdir()
    big = max(source, key=lambda p: p.stat().st_size)
    assert hashlib.sha256(to_crlf(big.read_bytes())).hexdigest() in {h for h, _, _ in got["Work"]}


async def test_second_maildir_import_copies_nothing(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    trees.write_maildir(root)
    with trio.fail_after(60):
        first = await import_maildir(store, "alice@example.test", root)
        before = await trees.snapshot(store, "alice@example.test")
        second = await import_maildir(store, "alice@example.test", root)
    assert second.messages == 0
    assert second.duplicates == first.messages
    assert await trees.snapshot(store, "alice@example.test") == before


async def test_maildir_round_trip(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    trees.write_maildir(root)
    with trio.fail_after(90):
        await import_maildir(store, "alice@example.test", root)
        alice = await trees.snapshot(store, "alice@example.test")
        out = tmp_path / "exported"
        summary = await export.export_maildir(
            store,
            await account_id(store, "alice@example.test"),
            out,
            quiet("exported"),
            trio.Event(),
        )
        assert summary.errors == []
        again = await import_maildir(store, "bob@example.test", out)
        assert again.errors == []
        bob = await trees.snapshot(store, "bob@example.test")
    assert without_empty(bob) == without_empty(alice)
    assert set(bob) == set(alice)
    # Dovecot can read it back: the uidlist names our UIDs.
    uidlist = (out / ".Work" / "dovecot-uidlist").read_text().splitlines()
    assert uidlist[0].startswith("3 V")
    assert [line.split()[0] for line in uidlist[1:]] == ["1", "2", "3"]


async def test_mbox_round_trip(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    trees.write_maildir(root)
    with trio.fail_after(90):
        await import_maildir(store, "alice@example.test", root)
        alice = await trees.snapshot(store, "alice@example.test")
        out = tmp_path / "mboxes"
        await export.export_mbox(
            store,
            await account_id(store, "alice@example.test"),
            out,
            quiet("exported"),
            trio.Event(),
        )
        summary = await import_mbox(store, "carol@example.test", out)
        assert summary.errors == []
        carol = await trees.snapshot(store, "carol@example.test")
        # ... and a second time: nothing new.
        again = await import_mbox(store, "carol@example.test", out)
    assert without_empty(carol) == without_empty(alice)
    assert set(carol) == set(alice)
    assert again.messages == 0 and again.duplicates == summary.messages
    assert (out / "Entwürfe" / "Ärger.mbox").is_file()
    assert (out / "v1.2.mbox").is_file()


async def test_more_than_26_keywords_is_reported(store: Store, tmp_path: Path) -> None:
    alice = await account_id(store, "alice@example.test")
    inbox = await store.get_mailbox(alice, "INBOX")
    assert inbox is not None
    keywords = [f"kw{n:02}" for n in range(27)]
    await store.append(inbox.id, b"Subject: many\r\n\r\nx\r\n", flags=keywords)
    with trio.fail_after(30):
        summary = await export.export_maildir(
            store, alice, tmp_path / "out", quiet("exported"), trio.Event()
        )
    assert summary.messages == 1
    assert summary.errors == [
        "folder 'INBOX': keyword 'kw26' not exported: Maildir has only 26 keyword letters"
    ]
    (path,) = (tmp_path / "out" / "cur").iterdir()
    assert path.name.endswith(":2," + "".join(chr(ord("a") + n) for n in range(26)))
