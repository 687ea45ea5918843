"""Domains, accounts, aliases, recipient resolution, mailboxes, schema checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from mailstack.config import Config, DatabaseConfig
from mailstack.store import migrate
from mailstack.store.records import (
    DEFAULT_MAILBOXES,
    AccountRecord,
    AlreadyExists,
    ChangeKind,
    InUse,
    InvalidName,
    NotFound,
    SchemaOutOfDate,
    TemporaryFailure,
)
from mailstack.store.store import Store


async def test_domains(store: Store) -> None:
    domain = await store.add_domain("Example.TEST")
    assert domain.name == "example.test"
    with pytest.raises(AlreadyExists):
        await store.add_domain("example.test")
    for bad in ("", "nodot", "-bad.test", "a..b", "sp ace.test", "x" * 64 + ".test"):
        with pytest.raises(InvalidName):
            await store.add_domain(bad)
    assert await store.is_local_domain("EXAMPLE.test")
    assert not await store.is_local_domain("other.test")
    assert not await store.is_local_domain("not a domain")
    assert [d.name for d in await store.list_domains()] == ["example.test"]
    await store.delete_domain("example.test")
    assert await store.list_domains() == []
    with pytest.raises(NotFound):
        await store.delete_domain("example.test")


async def test_account_creation_and_lookup(store: Store, alice: AccountRecord) -> None:
    assert alice.address == "alice@example.test"
    assert (await store.get_account("ALICE@Example.Test")) == alice
    assert (await store.get_account_by_id(alice.id)) == alice
    assert await store.get_account("nobody@example.test") is None
    assert await store.get_account("not an address") is None
    with pytest.raises(AlreadyExists):
        await store.add_account("Alice@EXAMPLE.test", "x")
    with pytest.raises(NotFound):
        await store.add_account("x@unknown.test", "x")
    for bad in ("noat", "@example.test", "a..b@example.test", "a b@example.test"):
        with pytest.raises(InvalidName):
            await store.add_account(bad, "x")
    boxes = await store.list_mailboxes(alice.id)
    assert {(b.name, b.special_use) for b in boxes} == set(DEFAULT_MAILBOXES)
    assert all(b.uidnext == 1 and b.messages == 0 and b.subscribed for b in boxes)
    await store.set_password_hash("alice@example.test", "new-hash")
    refreshed = await store.get_account("alice@example.test")
    assert refreshed is not None and refreshed.password_hash == "new-hash"
    with pytest.raises(InUse):
        await store.delete_domain("example.test")
    await store.delete_account("alice@example.test")
    assert await store.get_account("alice@example.test") is None
    assert await store.list_mailboxes(alice.id) == []
    with pytest.raises(NotFound):
        await store.set_password_hash("alice@example.test", "h")


async def test_resolve_recipient(store: Store, alice: AccountRecord, bob: AccountRecord) -> None:
    assert [a.id for a in await store.resolve_recipient("ALICE@example.TEST") or []] == [alice.id]
    assert await store.resolve_recipient("nobody@example.test") is None
    assert await store.resolve_recipient("alice@remote.test") is None
    assert await store.resolve_recipient("garbage") is None

    await store.add_alias("postmaster@example.test", ["alice@example.test"])
    await store.add_alias("team@example.test", ["bob@example.test", "Postmaster@example.test"])
    # A loop: loop1 -> loop2 -> loop1 (and loop2 also reaches bob).
    await store.add_alias("loop1@example.test", ["loop2@example.test"])
    await store.add_alias("loop2@example.test", ["loop1@example.test", "bob@example.test"])
    await store.add_alias("both@example.test", ["alice@example.test", "ALICE@example.test"])
    with pytest.raises(AlreadyExists):
        await store.add_alias("Team@example.test", ["alice@example.test"])
    with pytest.raises(NotFound):
        await store.add_alias("x@remote.test", ["alice@example.test"])
    with pytest.raises(InvalidName):
        await store.add_alias("x@example.test", [])

    async def ids(address: str) -> list[int] | None:
        found = await store.resolve_recipient(address)
        return None if found is None else sorted(a.id for a in found)

    assert await ids("postmaster@example.test") == [alice.id]
    assert await ids("team@example.test") == sorted([alice.id, bob.id])
    assert await ids("loop1@example.test") == [bob.id]
    assert await ids("both@example.test") == [alice.id]
    assert await ids("random@example.test") is None

    await store.add_alias("@example.test", ["bob@example.test"])
    assert await ids("random@example.test") == [bob.id]
    assert await ids("alice@example.test") == [alice.id]  # accounts win
    owned = await store.addresses_owned_by(alice.id)
    assert owned == ["alice@example.test", "both@example.test", "postmaster@example.test"]
    assert "@example.test" in [a.alias for a in await store.list_aliases()]
    await store.delete_alias("@EXAMPLE.test")
    assert await ids("random@example.test") is None
    with pytest.raises(NotFound):
        await store.delete_alias("@example.test")


async def test_mailbox_lifecycle_and_uidvalidity(store: Store, alice: AccountRecord) -> None:
    created = await store.create_mailbox(alice.id, "Projects")
    with pytest.raises(AlreadyExists):
        await store.create_mailbox(alice.id, "Projects")
    for bad in ("", "a//b", "/lead", "trail/", "star*", "pct%", "ctl\x01"):
        with pytest.raises(InvalidName):
            await store.create_mailbox(alice.id, bad)
    with pytest.raises(InvalidName):
        await store.create_mailbox(alice.id, "X", special_use="\\Bogus")
    inbox = await store.get_mailbox(alice.id, "inbox")
    assert inbox is not None and inbox.name == "INBOX"
    with pytest.raises(InvalidName):
        await store.delete_mailbox(alice.id, "INBOX")

    await store.delete_mailbox(alice.id, "Projects")
    assert await store.get_mailbox(alice.id, "Projects") is None
    recreated = await store.create_mailbox(alice.id, "Projects")
    # RFC 9051 2.3.1.1: a new mailbox with an old name needs a new UIDVALIDITY.
    assert recreated.uidvalidity > created.uidvalidity
    assert recreated.id != created.id
    with pytest.raises(NotFound):
        await store.delete_mailbox(alice.id, "Nope")

    await store.set_subscribed(alice.id, "Projects", False)
    again = await store.get_mailbox(alice.id, "Projects")
    assert again is not None and not again.subscribed


async def test_rename_with_children(store: Store, alice: AccountRecord) -> None:
    await store.create_mailbox(alice.id, "A")
    await store.create_mailbox(alice.id, "A/B")
    await store.create_mailbox(alice.id, "A/B/C")
    await store.create_mailbox(alice.id, "AB")  # not a child of A
    before = await store.get_mailbox(alice.id, "A/B")
    await store.rename_mailbox(alice.id, "A", "Z")
    names = {b.name for b in await store.list_mailboxes(alice.id)}
    assert {"Z", "Z/B", "Z/B/C", "AB"} <= names
    assert not names & {"A", "A/B", "A/B/C"}
    after = await store.get_mailbox(alice.id, "Z/B")
    assert before is not None and after is not None
    assert after.id == before.id and after.uidvalidity == before.uidvalidity
    assert after.highestmodseq > before.highestmodseq
    with pytest.raises(AlreadyExists):
        await store.rename_mailbox(alice.id, "Z", "AB")
    with pytest.raises(AlreadyExists):
        await store.rename_mailbox(alice.id, "Z", "inbox")
    with pytest.raises(InvalidName):
        await store.rename_mailbox(alice.id, "Z", "Z/inner")
    with pytest.raises(NotFound):
        await store.rename_mailbox(alice.id, "Missing", "Other")
    changes = await store.changes_since(0)
    renamed = [c for c in changes if c.kind is ChangeKind.MAILBOX_RENAMED]
    assert {(c.detail["old"], c.detail["new"]) for c in renamed} == {
        ("A", "Z"),
        ("A/B", "Z/B"),
        ("A/B/C", "Z/B/C"),
    }


async def test_store_open_refuses_unmigrated_database(config: Config) -> None:
    with pytest.raises(SchemaOutOfDate, match="mailstack db upgrade"):
        await Store.open(config)
    migrate.upgrade(config.database_url)
    store = await Store.open(config)
    await store.aclose()


async def test_works_without_running_writer(config: Config) -> None:
    """Store.open alone (CLI use): writes commit one by one, no subscribe."""
    migrate.upgrade(config.database_url)
    store = await Store.open(config)
    try:
        await store.add_domain("example.test")
        account = await store.add_account("carol@example.test", "h")
        assert len(await store.list_mailboxes(account.id)) == len(DEFAULT_MAILBOXES)
        with pytest.raises(RuntimeError):
            store.subscribe(account.id)
    finally:
        await store.aclose()


async def test_concurrent_mailbox_creation_one_wins(store: Store, alice: AccountRecord) -> None:
    outcomes: list[str] = []

    async def create() -> None:
        try:
            await store.create_mailbox(alice.id, "Race")
            outcomes.append("ok")
        except AlreadyExists:
            outcomes.append("exists")

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(create)
    assert sorted(outcomes) == ["exists"] * 9 + ["ok"]


async def test_unreachable_database_is_a_temporary_failure(tmp_path: Path) -> None:
    for url in (
        f"sqlite:///{tmp_path / 'missing-dir' / 'mail.db'}",
        "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2",
    ):
        config = Config(data_dir=str(tmp_path), database=DatabaseConfig(url=url))
        with pytest.raises(TemporaryFailure):
            await Store.open(config)


async def test_run_lifecycle(config: Config) -> None:
    migrate.upgrade(config.database_url)
    store = await Store.open(config)
    try:
        assert not store.running
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            assert store.running
            with pytest.raises(RuntimeError):
                await store.run()
            nursery.cancel_scope.cancel()
        assert not store.running
    finally:
        await store.aclose()
