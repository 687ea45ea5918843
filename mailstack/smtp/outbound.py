"""The "queue" service: delivers the outbound queue (``mailstack serve queue``).

A loop leases due jobs from the store (one job = one message's recipients
at one domain, carried by one SMTP connection), runs each in its own task
under ``[outbound] max_connections``, and sleeps until mail is queued in
this process, a job ends, the next retry is due or ``poll_seconds`` pass
(mail queued by other processes or hosts).  A job's lease is renewed while
it runs; if the process dies the lease runs out and any worker takes the
job over.  Final outcomes (delivered, failed) are committed right after the
remote's reply, before QUIT, with the DSN for each failure in the same
commit; temporary ones are retried with exponential backoff until
``max_age_seconds`` (``queue_results.py``).  This file decides where a job
goes: local INBOXes, the smarthost, or the domain's MX hosts in turn.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dns.asyncresolver
import dns.resolver
import trio

from mailstack import dns as mailstack_dns
from mailstack.config import ConfigError, Endpoint, OutboundConfig
from mailstack.net import Bound
from mailstack.secret import Secret
from mailstack.service import ServiceContext
from mailstack.smtp import client, delivery, routes
from mailstack.smtp.client_protocol import (
    ClientProtocol,
    ClientSettings,
    Envelope,
    Outcome,
    TlsPolicy,
    synthetic,
)
from mailstack.smtp.queue_results import JobState, Recorder
from mailstack.store.records import (
    DeliveryJob,
    OverQuota,
    QueuedRecipientRecord,
    StoreError,
)

logger = logging.getLogger("mailstack.queue")


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach the servers for one job."""

    hosts: list[routes.Host]
    port: int
    policy: TlsPolicy
    implicit_tls: bool = False
    username: str = ""
    password: Secret[str] | None = None
    smarthost: bool = False


def _verified_context(config: OutboundConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if config.tls_ca_file:
        context.load_verify_locations(cafile=config.tls_ca_file)
    return context


def _unverified_context() -> ssl.SSLContext:
    # Opportunistic TLS (RFC 3207 4.1 allows going on after a failed
    # verification): encrypted against passive listeners at least.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _read_password(path: str) -> Secret[str] | None:
    if not path:
        return None
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return Secret(lines[0] if lines else "")


class QueueRunner:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._store = ctx.store
        self._config = ctx.config.outbound
        self._hostname = ctx.config.hostname
        try:
            self._resolver: dns.asyncresolver.Resolver = mailstack_dns.async_resolver(
                ctx.config.dns
            )
        except dns.resolver.NoResolverConfiguration:
            raise ConfigError(
                ctx.config.source,
                "dns.nameservers",
                "the system has no resolver configuration (/etc/resolv.conf): set nameservers",
            ) from None
        self._owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self._limiter = trio.CapacityLimiter(self._config.max_connections)
        self._wake = trio.Event()
        self._verified = _verified_context(self._config)
        self._unverified = _unverified_context()
        self._password = _read_password(self._config.smarthost_password_file)
        self._results = Recorder(self._store, self._owner, self._config, self._hostname)
        self._timeouts = client.Timeouts(
            self._config.connect_timeout_seconds,
            self._config.command_timeout_seconds,
            self._config.data_timeout_seconds,
        )

    # -- the loop ----------------------------------------------------------------

    def _wake_up(self) -> None:
        self._wake.set()

    async def _forward_kicks(self) -> None:
        while True:
            await self._store.queue_kicked()
            self._wake_up()

    async def _forward_shutdown(self) -> None:
        await self._ctx.shutdown.event.wait()
        self._wake_up()

    async def run(self, *, task_status: trio.TaskStatus[list[Bound]]) -> None:
        logger.info("queue worker %s started", self._owner)
        async with trio.open_nursery() as jobs:
            async with trio.open_nursery() as helpers:
                helpers.start_soon(self._forward_kicks)
                helpers.start_soon(self._forward_shutdown)
                task_status.started([])
                while not self._ctx.shutdown.started:
                    self._wake = trio.Event()
                    await self._claim_and_start(jobs)
                    with trio.move_on_after(await self._sleep_seconds()):
                        await self._wake.wait()
                helpers.cancel_scope.cancel()
            # Leaving `jobs` waits for deliveries in progress (the service's
            # grace period bounds it; a cancelled one is retried later).

    async def _claim_and_start(self, jobs: trio.Nursery) -> None:
        free = int(self._limiter.available_tokens)
        if not free:
            return
        try:
            claimed = await self._store.claim_deliveries(
                self._owner, lease_seconds=self._config.lease_seconds, limit=free
            )
        except StoreError as exc:
            logger.warning("queue: cannot claim deliveries: %s", exc)
            return
        for job in claimed:
            await self._limiter.acquire_on_behalf_of(job)
            jobs.start_soon(self._run_job, job)

    async def _sleep_seconds(self) -> float:
        poll = self._config.poll_seconds
        if not self._limiter.available_tokens:
            return poll  # a finishing job wakes the loop
        try:
            due = await self._store.next_queue_due()
        except StoreError:
            return poll
        if due is None:
            return poll
        # Never busy-loop on a due job that someone else holds.
        return min(poll, max(0.05, (due - datetime.now(UTC)).total_seconds()))

    async def _run_job(self, job: DeliveryJob) -> None:
        # A job that fails leaves its lease to run out: it is tried again then.
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._renew_lease, job)
                await self._deliver(job)
                nursery.cancel_scope.cancel()
        except* StoreError as group:
            logger.warning(
                "queue: message %d: store unavailable: %s", job.message.id, group.exceptions[0]
            )
        except* Exception:
            logger.exception("queue: message %d to %s failed", job.message.id, job.domain)
        finally:
            self._limiter.release_on_behalf_of(job)
            self._wake_up()

    async def _renew_lease(self, job: DeliveryJob) -> None:
        ids = [r.id for r in job.message.recipients]
        while True:
            await trio.sleep(self._config.lease_seconds / 3)
            try:
                await self._store.renew_lease(self._owner, ids, self._config.lease_seconds)
            except StoreError as exc:
                logger.warning("queue: cannot renew lease: %s", exc)

    # -- one job -------------------------------------------------------------------

    async def _deliver(self, job: DeliveryJob) -> None:
        message = job.message
        content = await self._store.read_queued_content(message.id)
        state = JobState(job, content)
        age = datetime.now(UTC) - message.created_at
        if age.total_seconds() >= self._config.max_age_seconds:
            for recipient in message.recipients:
                state.temporary[recipient.address] = synthetic(
                    451, "4.4.7", f"message expired; last result: {recipient.last_result or '-'}"
                )
            await self._results.finish(state)
            return
        hops = delivery.hop_count(content)
        if hops > self._config.max_hops:
            loop = synthetic(554, "5.4.6", f"mail loop: {hops} Received header fields")
            await self._results.record(state, {r.address: loop for r in message.recipients}, None)
            return
        if await self._store.is_local_domain(job.domain):
            await self._deliver_locally(state)
        else:
            await self._deliver_remotely(state)
        await self._results.finish(state)

    async def _deliver_locally(self, state: JobState) -> None:
        """Mail for a local domain that went through the queue (a DSN to a
        local sender): into the INBOXes, atomically with the state."""
        known: list[QueuedRecipientRecord] = []
        accounts: set[int] = set()
        unknown: dict[str, Outcome] = {}
        for recipient in state.job.message.recipients:
            found = await self._store.resolve_recipient(recipient.address)
            if found is None:
                unknown[recipient.address] = synthetic(550, "5.1.1", "no such local mailbox")
            else:
                known.append(recipient)
                accounts.update(a.id for a in found)
        if unknown:
            await self._results.record(state, unknown, None)
        if not known:
            return
        sender = state.job.message.sender.encode("utf-8")
        raw = b"Return-Path: <" + sender + b">\r\n" + state.content
        try:
            await self._store.deliver_queued_locally(
                self._owner, [r.id for r in known], sorted(accounts), raw
            )
        except OverQuota:
            for recipient in known:
                state.temporary[recipient.address] = synthetic(452, "4.2.2", "mailbox full")
            return
        for recipient in known:
            state.pending.pop(recipient.address, None)
        logger.info("queue: message %d delivered locally to %d", state.job.message.id, len(known))

    def _route(self, domain: str) -> Route:
        config = self._config
        if config.smarthost:
            relay = Endpoint.parse(config.smarthost)
            return Route(
                [routes.Host(relay.host, 0)],
                relay.port,
                TlsPolicy.NONE if config.smarthost_tls == "implicit" else TlsPolicy.REQUIRED,
                implicit_tls=config.smarthost_tls == "implicit",
                username=config.smarthost_username,
                password=self._password,
                smarthost=True,
            )
        required = domain in (d.lower() for d in config.require_tls_domains)
        return Route([], config.port, TlsPolicy.REQUIRED if required else TlsPolicy.OPPORTUNISTIC)

    async def _deliver_remotely(self, state: JobState) -> None:
        domain = state.job.domain
        route = self._route(domain)
        if not route.smarthost:
            try:
                route = Route(
                    await routes.mx_hosts(self._resolver, domain), route.port, route.policy
                )
            except routes.RouteError as exc:
                failure = Outcome(exc.reply, from_remote=False)
                if isinstance(exc, routes.RoutePermanentError):
                    await self._results.record(state, dict.fromkeys(state.pending, failure), None)
                else:
                    state.temporary.update(dict.fromkeys(state.pending, failure))
                return
        last = synthetic(451, "4.4.1", f"no mail server for {domain} could be reached")
        for host in route.hosts:
            try:
                addresses = await routes.host_addresses(self._resolver, host.name)
            except routes.RouteError as exc:
                last = Outcome(exc.reply, from_remote=False)
                continue
            for address in addresses:
                answered, refusal = await self._try_address(state, route, host, address)
                if answered or not state.pending:
                    return
                if refusal is not None:
                    last = refusal
                    state.last_mta = host.name
        # Every host refused the session (RFC 5321 5.1: each was tried in
        # turn): the last reason decides, permanent or not.
        pending = dict.fromkeys(state.pending, last)
        if last.permanent:
            await self._results.record(state, pending, state.last_mta if last.from_remote else None)
        else:
            state.temporary.update(pending)

    async def _try_address(
        self, state: JobState, route: Route, host: routes.Host, address: str
    ) -> tuple[bool, Outcome | None]:
        """One connection: (whether the server took on the message, so no
        other host should be tried; else why this one failed)."""
        verify = True
        while True:
            core = self._client(state, route, verify)
            refused: list[Outcome] = []

            async def on_done(
                outcomes: dict[str, Outcome],
                core: ClientProtocol = core,
                refused: list[Outcome] = refused,
            ) -> None:
                if core.mail_accepted:
                    # Results from the server that took the message: final
                    # ones are committed now, before QUIT.
                    await self._results.record(state, outcomes, host.name)
                else:
                    # Refused before MAIL was accepted (greeting, EHLO, TLS,
                    # MAIL itself, a missing extension): the same for every
                    # recipient, and another host may do better.
                    refused.extend(outcomes.values())

            try:
                await client.run_session(
                    core,
                    address,
                    route.port,
                    server_name=host.name,
                    tls_context=self._verified if verify else self._unverified,
                    implicit_tls=route.implicit_tls,
                    timeouts=self._timeouts,
                    on_done=on_done,
                )
            except client.ConnectFailed as exc:
                logger.info("queue: %s (%s): %s", host.name, address, exc)
                return False, synthetic(451, "4.4.1", f"{host.name}: {exc}")
            except client.CertificateNotVerified as exc:
                if route.policy is TlsPolicy.REQUIRED or route.implicit_tls or not verify:
                    logger.warning("queue: %s certificate did not verify: %s", host.name, exc)
                    return False, synthetic(
                        451, "4.7.5", f"{host.name}: certificate did not verify: {exc}"
                    )
                logger.warning(
                    "queue: %s certificate did not verify (%s); TLS without verification",
                    host.name,
                    exc,
                )
                verify = False
                continue
            if core.mail_accepted:
                return True, None
            return False, refused[0] if refused else None

    def _client(self, state: JobState, route: Route, verify: bool) -> ClientProtocol:
        message = state.job.message
        envelope = Envelope(
            sender=message.sender,
            recipients=tuple(state.pending),
            size=len(state.content),
            smtputf8=message.smtputf8,
            eight_bit=message.eight_bit,
        )
        settings = ClientSettings(
            helo_name=self._hostname,
            tls=route.policy,
            tls_active=route.implicit_tls,
            username=route.username,
            password=route.password,
        )
        return ClientProtocol(settings, envelope, state.content)


async def serve(
    ctx: ServiceContext, *, task_status: trio.TaskStatus[list[Bound]] = trio.TASK_STATUS_IGNORED
) -> None:
    """[outbound] enabled: deliver the queue until the service stops."""
    await QueueRunner(ctx).run(task_status=task_status)
