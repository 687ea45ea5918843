"""POP3 maildrop locks in the store: what two hosts sharing it see.

Each ``MaildropLocks`` stands for one process (its own owner name), as a
POP3 service on another host would be; both talk to the same database.
"""

from __future__ import annotations

import pytest
import trio

from mailstack.pop3.locks import MaildropLocks
from mailstack.store.records import AccountRecord, NotFound
from mailstack.store.store import Store

LIVE = 60.0  # seconds: outlives the test
LAPSED = 0.0  # a lock that has already expired (its host died)


async def test_one_session_per_maildrop_across_hosts(
    store: Store, alice: AccountRecord, bob: AccountRecord
) -> None:
    host_a = MaildropLocks(store, LIVE)
    host_b = MaildropLocks(store, LIVE)
    assert await host_a.acquire(alice.id)
    assert not await host_a.acquire(alice.id)  # second session, same process
    assert not await host_b.acquire(alice.id)  # second session, other host
    assert await host_b.acquire(bob.id)  # other maildrops are independent
    assert host_a.holds(alice.id) and not host_b.holds(alice.id)
    await host_a.release(alice.id)
    await host_a.release(alice.id)  # releasing twice is harmless
    assert not host_a.holds(alice.id)
    assert await host_b.acquire(alice.id)


async def test_lock_of_a_dead_host_lapses(store: Store, alice: AccountRecord) -> None:
    dead_host = MaildropLocks(store, LAPSED)
    assert await dead_host.acquire(alice.id)
    survivor = MaildropLocks(store, LIVE)
    assert await survivor.acquire(alice.id)
    # The old holder, if it comes back, learns that it lost the maildrop.
    assert await store.renew_maildrop_locks(dead_host.owner, [alice.id], LIVE) == [alice.id]
    assert await store.renew_maildrop_locks(survivor.owner, [alice.id], LIVE) == []
    assert not await MaildropLocks(store, LIVE).acquire(alice.id)


async def test_keep_alive_renews_and_reports_a_lost_lock(
    store: Store, alice: AccountRecord
) -> None:
    # Expiry 0.3 s, renewed every 0.1 s: without renewal it would lapse.
    holder = MaildropLocks(store, 0.3)
    assert await holder.acquire(alice.id)
    other = MaildropLocks(store, LIVE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder.keep_alive)
        for _ in range(6):
            await trio.sleep(0.1)
            assert not await other.acquire(alice.id)
        assert holder.holds(alice.id)
        nursery.cancel_scope.cancel()
    # Renewal stopped (as when the database was unreachable): the lock
    # lapses, another host takes it, and the next renewal marks it lost.
    with trio.fail_after(5):
        while True:
            if await other.acquire(alice.id):
                break
            await trio.sleep(0.05)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder.keep_alive)
        with trio.fail_after(5):
            while True:
                if not holder.holds(alice.id):
                    break
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    await holder.release(alice.id)  # does not remove the new owner's lock
    assert not await MaildropLocks(store, LIVE).acquire(alice.id)


async def test_released_lock_is_not_renewed_back(store: Store, alice: AccountRecord) -> None:
    holder = MaildropLocks(store, LIVE)
    assert await holder.acquire(alice.id)
    await holder.release(alice.id)
    # A renewal queued before the release ran after it: no lock reappears.
    assert await store.renew_maildrop_locks(holder.owner, [alice.id], LIVE) == [alice.id]
    assert await MaildropLocks(store, LIVE).acquire(alice.id)


async def test_unknown_account(store: Store) -> None:
    with pytest.raises(NotFound):
        await MaildropLocks(store, LIVE).acquire(12345)


async def test_deleting_the_account_drops_its_lock(store: Store, alice: AccountRecord) -> None:
    holder = MaildropLocks(store, LIVE)
    assert await holder.acquire(alice.id)
    await store.delete_account(alice.address)
    assert await store.renew_maildrop_locks(holder.owner, [alice.id], LIVE) == [alice.id]
