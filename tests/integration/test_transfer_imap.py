"""``mailstack import imap`` from a second mailstack instance over TLS."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
import trio

from mailstack.store.store import Store
from mailstack.transfer.imap_import import ImapSourceError, ImapUrl, import_from_imap
from mailstack.transfer.progress import Progress, Summary
from tests.integration.conftest import Stack, StackFactory
from tests.unit.transfer import trees

KEPT_UIDVALIDITY = 4242
SOURCE_FOLDERS = {
    "INBOX": [frozenset({"\\Seen"}), frozenset({"\\Answered", "\\Flagged", "$Label1"})],
    "Work/Projects": [frozenset({"\\Draft", "\\Deleted"})],
    "Café/Entwürfe": [frozenset(), frozenset({"\\Seen", "project-x"})],
}


async def fill_source(stack: Stack) -> None:
    account = await stack.store.get_account("alice@example.test")
    assert account is not None
    n = 0
    for name, flag_sets in SOURCE_FOLDERS.items():
        mailbox = await stack.store.get_mailbox(account.id, name)
        if mailbox is None:
            mailbox = await stack.store.create_mailbox(account.id, name)
            # A UIDVALIDITY the target store cannot have handed out itself.
            assert await stack.store.adopt_uidvalidity(mailbox.id, KEPT_UIDVALIDITY + n)
        for flags in flag_sets:
            n += 1
            when = datetime(2020, 1, n, 12, 0, 0, tzinfo=UTC)
            await stack.store.append(
                mailbox.id, trees.message(n, lf=False), flags=flags, internal_date=when
            )
    # No Message-ID: matched by content on the second run.
    inbox = await stack.store.get_mailbox(account.id, "INBOX")
    assert inbox is not None
    await stack.store.append(inbox.id, b"Subject: no id\r\n\r\nbody\r\n")


async def copy(
    source: Stack, target: Store, password: str = "alice-password", *, implicit_tls: bool = True
) -> Summary:
    _, port = source.addr("imap", implicit_tls=implicit_tls)
    account = await target.get_account("bob@example.test")
    assert account is not None
    progress = Progress("imported", out=io.StringIO(), err=io.StringIO(), interactive=False)
    return await import_from_imap(
        target,
        account.id,
        ImapUrl(implicit_tls, "alice@example.test", "localhost", port),
        password,
        source.client_ssl_context(),
        progress,
        trio.Event(),
    )


async def test_import_over_imap_then_again_copies_nothing(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        source = await stack_factory(services=("imap",))
        target = await stack_factory(services=("imap",))
        await fill_source(source)
        first = await copy(source, target.store)
        assert first.errors == []
        assert first.messages == 6
        assert first.duplicates == 0
        copied = await trees.snapshot(target.store, "bob@example.test")
        original = await trees.snapshot(source.store, "alice@example.test")
        assert {k: v for k, v in copied.items() if v} == {k: v for k, v in original.items() if v}
        # Where the target mailbox never held mail and nobody there uses the
        # source's UIDVALIDITY, the UIDs are kept (clients need not resync).
        bob = await target.store.get_account("bob@example.test")
        assert bob is not None
        alice = await source.store.get_account("alice@example.test")
        assert alice is not None
        kept = 0
        for mailbox in await target.store.list_mailboxes(bob.id):
            if mailbox.uidvalidity < KEPT_UIDVALIDITY + 100:
                kept += 1
                origin = await source.store.get_mailbox(alice.id, mailbox.name)
                assert origin is not None and origin.uidvalidity == mailbox.uidvalidity
                source_uids = [m.uid for m in await source.store.list_messages(origin.id)]
                target_uids = [m.uid for m in await target.store.list_messages(mailbox.id)]
                assert source_uids == target_uids and mailbox.uidnext == origin.uidnext
        assert kept == 2  # Work/Projects and Café/Entwürfe
        # Interrupted or not, a second run copies only what is new.
        second = await copy(source, target.store)
        assert second.messages == 0
        assert second.duplicates == 6
        assert await trees.snapshot(target.store, "bob@example.test") == copied


async def test_wrong_password_is_one_clear_error(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        source = await stack_factory(services=("imap",))
        with pytest.raises(ImapSourceError, match="localhost"):
            await copy(source, source.store, password="wrong")


async def test_starttls_url(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        source = await stack_factory(services=("imap",))
        await fill_source(source)
        summary = await copy(source, source.store, implicit_tls=False)
        # Into bob on the same server: every message is new there.
        assert summary.messages == 6 and summary.errors == []
        bob = await trees.snapshot(source.store, "bob@example.test")
        assert sum(len(v) for v in bob.values()) == 6
