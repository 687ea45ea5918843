"""Authenticator against a real Store (SQLite in tmp_path)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from mailstack.auth.authenticator import Authenticator
from mailstack.auth.passwords import PasswordHasher, dummy_hash
from mailstack.auth.sasl import Credentials
from mailstack.config import AuthConfig, Config
from mailstack.secret import Secret
from mailstack.store import migrate
from mailstack.store.store import Store

CHEAP = AuthConfig(
    argon2_time_cost=1,
    argon2_memory_kib=64,
    argon2_parallelism=1,
    free_failures=2,
    delay_base_seconds=0.4,
    delay_max_seconds=0.4,
    lockout_failures=4,
    lockout_seconds=60.0,
)
IP = "192.0.2.10"

StoreFactory = Callable[[AuthConfig], Awaitable[tuple[Config, Store]]]


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens a migrated store with alice@example.test / alice-password, the
    password hashed with the given parameters."""
    opened: list[Store] = []

    async def make(auth: AuthConfig) -> tuple[Config, Store]:
        config = Config(data_dir=str(tmp_path), auth=auth)
        await trio.to_thread.run_sync(migrate.upgrade, config.database_url)
        store = await Store.open(config)
        opened.append(store)
        await store.add_domain("example.test")
        password_hash = await trio.to_thread.run_sync(PasswordHasher(auth).hash, "alice-password")
        await store.add_account("alice@example.test", password_hash)
        return config, store

    yield make
    for store in opened:
        await store.aclose()


async def timed(fn: Callable[[], Awaitable[object]]) -> tuple[object, float]:
    start = trio.current_time()
    result = await fn()
    return result, trio.current_time() - start


async def test_right_wrong_and_unknown(make_store: StoreFactory) -> None:
    with trio.fail_after(30):
        config, store = await make_store(CHEAP)
        auth = Authenticator(config, store)
        account = await auth.verify("alice@example.test", Secret("alice-password"), peer_ip=IP)
        assert account is not None
        assert account.address == "alice@example.test"
        assert await auth.verify("alice@example.test", Secret("wrong"), peer_ip=IP) is None
        assert await auth.verify("bob@example.test", Secret("alice-password"), peer_ip=IP) is None
        assert await auth.verify("not an address", Secret("x"), peer_ip=IP) is None
        assert await auth.verify("", Secret("x"), peer_ip="192.0.2.99") is None


async def test_unknown_user_costs_a_real_argon2_verification(make_store: StoreFactory) -> None:
    # Costly enough that a skipped hash would be obvious next to a real one.
    auth_config = AuthConfig(
        argon2_time_cost=2,
        argon2_memory_kib=16384,
        argon2_parallelism=1,
        free_failures=100,
        lockout_failures=0,
    )
    with trio.fail_after(60):
        config, store = await make_store(auth_config)
        auth = Authenticator(config, store)
        dummy_hash(auth_config)  # computed once, up front, like any warm server
        wrong, unknown = [], []
        for _ in range(3):
            _, seconds = await timed(
                lambda: auth.verify("alice@example.test", Secret("nope"), peer_ip=IP)
            )
            wrong.append(seconds)
            _, seconds = await timed(
                lambda: auth.verify("ghost@example.test", Secret("nope"), peer_ip=IP)
            )
            unknown.append(seconds)
        # Extra load only adds time, so the minimum is each path's real cost.
        assert min(unknown) >= 0.5 * min(wrong), (unknown, wrong)
        assert min(unknown) <= 2.0 * min(wrong) + 0.05, (unknown, wrong)


async def test_failures_are_answered_after_the_throttle_delay(make_store: StoreFactory) -> None:
    with trio.fail_after(30):
        config, store = await make_store(CHEAP)
        auth = Authenticator(config, store)
        durations = []
        for _ in range(3):
            result, seconds = await timed(
                lambda: auth.verify("alice@example.test", Secret("wrong"), peer_ip=IP)
            )
            assert result is None
            durations.append(seconds)
        # free_failures = 2: the third failure waits delay_base_seconds.
        assert durations[0] < 0.35 and durations[1] < 0.35, durations
        assert durations[2] >= 0.4, durations


async def test_success_clears_the_counters(make_store: StoreFactory) -> None:
    with trio.fail_after(30):
        config, store = await make_store(CHEAP)
        auth = Authenticator(config, store)
        for _ in range(2):
            assert await auth.verify("alice@example.test", Secret("wrong"), peer_ip=IP) is None
        assert await auth.verify("alice@example.test", Secret("alice-password"), peer_ip=IP)
        result, seconds = await timed(
            lambda: auth.verify("alice@example.test", Secret("wrong"), peer_ip=IP)
        )
        assert result is None
        assert seconds < 0.35


async def test_lockout_refuses_even_the_right_password(make_store: StoreFactory) -> None:
    with trio.fail_after(30):
        config, store = await make_store(CHEAP)
        auth = Authenticator(config, store)
        for i in range(4):
            assert not auth.is_locked_out(IP, "alice@example.test")
            await auth.verify("alice@example.test", Secret(f"guess{i}"), peer_ip=IP)
        assert auth.is_locked_out(IP, "alice@example.test")
        # The account is locked from any address; the address for any account.
        assert auth.is_locked_out("198.51.100.1", "ALICE@example.test")
        assert auth.is_locked_out(IP, "bob@example.test")
        assert await auth.verify("alice@example.test", Secret("alice-password"), peer_ip=IP) is None
        # An unrelated client and account are not affected.
        assert not auth.is_locked_out("198.51.100.1", "bob@example.test")


async def test_rehash_when_parameters_change(make_store: StoreFactory) -> None:
    with trio.fail_after(30):
        config, store = await make_store(CHEAP)
        old = await store.get_account("alice@example.test")
        assert old is not None and "t=1" in old.password_hash
        stronger = AuthConfig(argon2_time_cost=2, argon2_memory_kib=128, argon2_parallelism=1)
        auth = Authenticator(config.replace(auth=stronger), store)
        assert await auth.verify("alice@example.test", Secret("alice-password"), peer_ip=IP)
        new = await store.get_account("alice@example.test")
        assert new is not None
        assert "m=128,t=2,p=1" in new.password_hash
        hasher = PasswordHasher(stronger)
        assert hasher.verify(new.password_hash, "alice-password")
        assert not hasher.needs_rehash(new.password_hash)
        # A failed login never rewrites the hash.
        auth_old = Authenticator(config, store)
        assert await auth_old.verify("alice@example.test", Secret("x"), peer_ip=IP) is None
        unchanged = await store.get_account("alice@example.test")
        assert unchanged is not None and unchanged.password_hash == new.password_hash


async def test_sasl_authzid_rules(make_store: StoreFactory) -> None:
    with trio.fail_after(30):
        config, store = await make_store(CHEAP)
        auth = Authenticator(config, store)
        password = Secret("alice-password")
        for authzid in ("", "alice@example.test", "ALICE@Example.Test"):
            creds = Credentials("alice@example.test", password, authzid)
            account = await auth.verify_credentials(creds, peer_ip=IP)
            assert account is not None and account.address == "alice@example.test"
        creds = Credentials("alice@example.test", password, "bob@example.test")
        assert await auth.verify_credentials(creds, peer_ip=IP) is None
        creds = Credentials("alice@example.test", Secret("wrong"), "")
        assert await auth.verify_credentials(creds, peer_ip=IP) is None


async def test_concurrent_logins_all_complete(make_store: StoreFactory) -> None:
    with trio.fail_after(30):
        config, store = await make_store(CHEAP)
        auth = Authenticator(config, store)
        results: list[bool] = []

        async def login(i: int) -> None:
            account = await auth.verify(
                "alice@example.test", Secret("alice-password"), peer_ip=f"10.0.0.{i}"
            )
            results.append(account is not None)

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(login, i)
        assert results == [True] * 8


async def test_passwords_never_logged(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(30):
        config, store = await make_store(CHEAP)
        auth = Authenticator(config, store)
        await auth.verify("alice@example.test", Secret("alice-password"), peer_ip=IP)
        await auth.verify("alice@example.test", Secret("hunter2-wrong"), peer_ip=IP)
        await auth.verify("ghost@example.test", Secret("hunter3-unknown"), peer_ip=IP)
        creds = Credentials("alice@example.test", Secret("alice-password"), "bob@example.test")
        await auth.verify_credentials(creds, peer_ip=IP)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "auth failed" in text
    for secret in ("alice-password", "hunter2-wrong", "hunter3-unknown"):
        assert secret not in text
