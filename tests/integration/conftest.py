"""Integration fixtures: a real stack on ephemeral ports with a real certificate.

``ca``: a trustme CA.  ``pg_url``: a fresh PostgreSQL schema (skips when
MAILSTACK_TEST_PG_URL is unset); stacks given the same
``database={"url": pg_url}`` share one store, like front-end hosts.

``stack_factory``: ``await stack_factory(services=..., **config_overrides)``
migrates a fresh SQLite store in tmp_path (or the given database), creates the
domain ``example.test`` with alice@example.test / ``alice-password`` and
bob@example.test / ``bob-password``, starts the services with
``service.run`` in the fixture's nursery and returns a :class:`Stack`.

``services=None`` (the default) starts every one of smtp, submission, imap
and pop3 that this build has; naming a service that is not built yet skips
the test.  Every listener is 127.0.0.1:0; submission, imap and pop3 also get
an implicit-TLS listener.  The MX checks no SPF/DKIM/DMARC unless the test
asks (``smtp={"authentication_checks": True}`` with ``dns=DnsConfig(...)``
naming its own test DNS server).  Keyword options: ``handle_signals`` (default False:
leave the process's signals alone), ``grace_seconds`` (default 2).

Config overrides: a top-level key (``hostname="mx.test"``), or a section name
with a dict of changed keys (``imap={"allow_plaintext_login": True}``), or a
whole section dataclass.  Clients run in threads
(``trio.to_thread.run_sync``); wrap each test in ``trio.fail_after``.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from mailstack import service
from mailstack.auth.passwords import PasswordHasher
from mailstack.config import SECTIONS, AuthConfig, Config, Endpoint, TlsConfig
from mailstack.net import Bound
from mailstack.store import migrate
from mailstack.store.store import Store
from tests.support.pg import PG_URL, fresh_schema

DOMAIN = "example.test"
ACCOUNTS = {
    "alice@example.test": "alice-password",
    "bob@example.test": "bob-password",
}
DEFAULT_SERVICES = ("smtp", "submission", "imap", "pop3")
LOOPBACK = (Endpoint("127.0.0.1", 0),)
# Sections that have an implicit-TLS list; the MX (smtp) and websocket
# listen in plaintext only (STARTTLS for smtp).
IMPLICIT_TLS = {"submission", "imap", "pop3"}
# argon2id at its cheapest: tests log in often, and the 2-core machine is shared.
CHEAP_AUTH = AuthConfig(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)


@dataclass
class Stack:
    config: Config
    store: Store
    bound: list[Bound]
    ca: trustme.CA
    ca_pem_path: Path
    accounts: dict[str, str] = field(default_factory=lambda: dict(ACCOUNTS))
    # Set ``stop`` to stop the services gracefully (the fixture cancels them
    # anyway); ``stopped`` is set once service.run has returned.
    stop: trio.Event = field(default_factory=trio.Event)
    stopped: trio.Event = field(default_factory=trio.Event)

    def addr(self, service_name: str, implicit_tls: bool = False) -> tuple[str, int]:
        for b in self.bound:
            if b.service == service_name and b.implicit_tls == implicit_tls:
                return b.host, b.port
        running = ", ".join(str(b) for b in self.bound)
        raise LookupError(f"no {service_name} listener (implicit_tls={implicit_tls}): {running}")

    def client_ssl_context(self) -> ssl.SSLContext:
        """What a client that trusts our CA uses (hostname checks on)."""
        return ssl.create_default_context(cafile=str(self.ca_pem_path))

    def reissue_certificate(self, *names: str) -> None:
        """Overwrite the configured certificate files with a new one for
        ``names`` (then SIGHUP or TlsProvider.reload picks it up)."""
        write_certificate(self.ca, self.config.tls, *names)


StackFactory = Callable[..., Awaitable[Stack]]


def write_certificate(ca: trustme.CA, tls: TlsConfig, *names: str) -> None:
    cert = ca.issue_cert(*names)
    cert.cert_chain_pems[0].write_to_path(tls.cert_file)
    cert.private_key_pem.write_to_path(tls.key_file)


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in SECTIONS and isinstance(value, dict):
            changes[key] = dataclasses.replace(getattr(config, key), **value)
        else:
            changes[key] = value
    return config.replace(**changes)


def base_config(directory: Path, services: Sequence[str]) -> Config:
    tls = TlsConfig(
        cert_file=str(directory / "server-cert.pem"), key_file=str(directory / "server-key.pem")
    )
    sections: dict[str, Any] = {}
    for name in services:
        if name not in SECTIONS:
            continue  # a service without listeners ("queue": [outbound] enabled)
        tls_listen = LOOPBACK if name in IMPLICIT_TLS else ()
        section = SECTIONS[name]()
        if tls_listen:
            section = dataclasses.replace(section, listen=LOOPBACK, tls_listen=tls_listen)
        else:
            section = dataclasses.replace(section, listen=LOOPBACK)
        if name == "smtp":
            # No SPF/DKIM/DMARC lookups unless a test asks for them (with
            # its own DNS server): the tests must not depend on the internet.
            section = dataclasses.replace(section, authentication_checks=False)
        sections[name] = section
    return Config(
        hostname="mail.example.test",
        data_dir=str(directory / "data"),
        tls=tls,
        auth=CHEAP_AUTH,
        **sections,
    )


async def create_accounts(store: Store, config: Config) -> None:
    """The test domain and accounts; a no-op for a shared database where an
    earlier stack of the same test already made them."""
    if await store.is_local_domain(DOMAIN):
        return
    hasher = PasswordHasher(config.auth)
    await store.add_domain(DOMAIN)
    for address, password in ACCOUNTS.items():
        password_hash = await trio.to_thread.run_sync(hasher.hash, password)
        await store.add_account(address, password_hash)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema (``database={"url": pg_url}``); skips
    without MAILSTACK_TEST_PG_URL."""
    if not PG_URL:
        pytest.skip("MAILSTACK_TEST_PG_URL is not set")
    with fresh_schema("integration") as url:
        yield url


@pytest.fixture
async def stack_factory(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[StackFactory]:
    stores: list[Store] = []
    ca_pem_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem_path))

    async with trio.open_nursery() as nursery:

        async def factory(
            services: Sequence[str] | None = None,
            *,
            handle_signals: bool = False,
            grace_seconds: float = 2.0,
            **overrides: Any,
        ) -> Stack:
            if services is None:
                # Default: every standard service this build already has.
                available = service.available_services()
                names = [n for n in DEFAULT_SERVICES if n in available]
            else:
                missing = [n for n in services if n not in service.available_services()]
                if missing:
                    pytest.skip(f"service not built yet: {', '.join(missing)}")
                names = list(services)
            directory = tmp_path / f"stack{len(stores)}"
            directory.mkdir()
            config = apply_overrides(base_config(directory, names), overrides)
            write_certificate(ca, config.tls, "localhost", "127.0.0.1", config.hostname)
            config.data_path.mkdir(parents=True, exist_ok=True)
            await trio.to_thread.run_sync(migrate.upgrade, config.database_url)
            store = await Store.open(config)
            stores.append(store)
            await create_accounts(store, config)
            stop, stopped = trio.Event(), trio.Event()

            async def run_stack(task_status: trio.TaskStatus[list[Bound]]) -> None:
                await service.run(
                    config,
                    names,
                    store=store,
                    handle_signals=handle_signals,
                    grace_seconds=grace_seconds,
                    stop=stop,
                    task_status=task_status,
                )
                stopped.set()

            bound: list[Bound] = await nursery.start(run_stack)
            return Stack(config, store, bound, ca, ca_pem_path, stop=stop, stopped=stopped)

        yield factory
        nursery.cancel_scope.cancel()
    with trio.CancelScope(shield=True):
        for store in stores:
            await store.aclose()
