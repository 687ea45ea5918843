"""Outbound delivery end to end, on loopback only.

A test DNS server (tests/support/dns_server.py) answers MX and A records of
the test domains; the remote MX is a second mailstack stack (hosting
``remote.test``) or, where the test needs to script its replies, the small
trio SMTP server of tests/support/smtp_stub.py.  Mail is submitted as
alice@example.test over the sending stack's submission port with smtplib.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
import trio

from mailstack.auth.passwords import PasswordHasher
from mailstack.config import DkimConfig, DkimKey, DnsConfig, Endpoint
from mailstack.dns import sync_resolver
from mailstack.smtp import dkim_keys
from mailstack.smtp.author import header_fields
from mailstack.smtp.dns_lookups import dkim_dnsfunc
from mailstack.store.records import Outgoing
from tests.support.dns_server import Zone, serve_dns, txt
from tests.support.smtp_stub import SmtpStub

from .conftest import Stack, StackFactory
from .test_smtp_smtplib import messages_of

SENDER = "alice@example.test"
PASSWORD = "alice-password"
FAST_RETRY = {"retry_initial_seconds": 0.2, "retry_max_seconds": 0.5, "poll_seconds": 0.2}


def zone_for(*domains: str) -> Zone:
    zone = Zone()
    for domain in domains:
        zone.add(domain, "MX", f"10 mx.{domain}.")
        zone.add(f"mx.{domain}", "A", "127.0.0.1")
    return zone


async def sending_stack(
    stack_factory: StackFactory,
    dns: Endpoint,
    port: int,
    *,
    services: tuple[str, ...] = ("submission", "queue"),
    **outbound: Any,
) -> Stack:
    return await stack_factory(
        services=list(services),
        submission={"allow_plaintext_auth_on_loopback": True},
        dns=DnsConfig(nameservers=(dns,), timeout_seconds=2.0),
        outbound={"enabled": True, "port": port, **FAST_RETRY, **outbound},
    )


async def remote_stack(stack_factory: StackFactory, *accounts: str) -> Stack:
    """A second mailstack as the MX of remote.test (its certificate names
    mx.remote.test, issued by the same test CA)."""
    remote = await stack_factory(services=["smtp"], hostname="mx.remote.test")
    await remote.store.add_domain("remote.test")
    password_hash = PasswordHasher(remote.config.auth).hash("x")
    for address in accounts:
        await remote.store.add_account(address, password_hash)
    return remote


def message(to: list[str], subject: str = "hello", extra: str = "") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg.set_content(f"outbound test\n{extra}")
    return msg


async def submit(stack: Stack, msg: EmailMessage, to: list[str], sender: str = SENDER) -> None:
    host, port = stack.addr("submission")

    def send() -> None:
        with smtplib.SMTP(host, port) as client:
            client.login(SENDER, PASSWORD)
            client.send_message(msg, from_addr=sender, to_addrs=to)

    await trio.to_thread.run_sync(send)


async def until(check: Callable[[], Awaitable[object]]) -> None:
    """Poll ``check`` until it is true: the store has no event to wait on
    for another process's or the queue's work (the caller bounds the time)."""
    while True:
        if await check():
            return
        await trio.sleep(0.05)


async def wait_until_queue_empty(stack: Stack) -> None:
    async def empty() -> bool:
        return not await stack.store.list_queue()

    await until(empty)


async def count(stack: Stack, address: str) -> int:
    return len(await messages_of(stack, address))


def parse(raw: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def delivery_status(raw: bytes) -> str:
    report = parse(raw)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    [status] = [p for p in report.iter_parts() if p.get_content_type() == "message/delivery-status"]
    return str(status)


async def test_submitted_message_reaches_remote_mx_once(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, zone_for("remote.test"))
            remote = await remote_stack(stack_factory, "carol@remote.test", "dave@remote.test")
            _, mx_port = remote.addr("smtp")
            stack = await sending_stack(
                stack_factory, dns, mx_port, tls_ca_file=str(remote.ca_pem_path)
            )
            to = ["carol@remote.test", "dave@remote.test", "bob@example.test"]
            await submit(stack, message(to), to)
            await until(lambda: count(remote, "dave@remote.test"))
            await wait_until_queue_empty(stack)
            await trio.sleep(0.5)  # room for a wrong second delivery
            for address in ("carol@remote.test", "dave@remote.test"):
                [delivered] = await messages_of(remote, address)
                header = delivered.split(b"\r\n\r\n")[0]
                assert b"Subject: hello" in header
                # Our submission trace, then the remote's, which says TLS was used.
                assert header.count(b"Received:") == 2
                assert b"(using TLS" in header
            # The local recipient got its copy directly, not through the queue.
            assert len(await messages_of(stack, "bob@example.test")) == 1
            assert await messages_of(stack, SENDER) == []  # no DSN
            nursery.cancel_scope.cancel()


async def test_remote_4xx_is_retried_then_delivered(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, zone_for("stub.test"))
            stub = SmtpStub(data_replies=["451 4.3.0 busy, try later", "421 4.4.5 still busy"])
            port = await nursery.start(stub.serve)
            stack = await sending_stack(stack_factory, dns, port)
            await submit(stack, message(["erin@stub.test"]), ["erin@stub.test"])
            await until(stub.has_accepted)
            await wait_until_queue_empty(stack)
            assert stub.transactions == 3
            assert [(s, r) for s, r, _ in stub.accepted] == [(SENDER, ["erin@stub.test"])]
            assert await messages_of(stack, SENDER) == []
            nursery.cancel_scope.cancel()


async def test_remote_5xx_gives_exactly_one_dsn(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, zone_for("remote.test"))
            remote = await remote_stack(stack_factory, "carol@remote.test")
            _, mx_port = remote.addr("smtp")
            stack = await sending_stack(
                stack_factory, dns, mx_port, tls_ca_file=str(remote.ca_pem_path)
            )
            to = ["carol@remote.test", "nobody@remote.test"]
            await submit(stack, message(to, "to a typo"), to)
            await until(lambda: count(stack, SENDER))
            await wait_until_queue_empty(stack)
            await trio.sleep(0.5)  # a second DSN would arrive now
            [bounce] = await messages_of(stack, SENDER)
            status = delivery_status(bounce)
            assert "Final-Recipient: rfc822; nobody@remote.test" in status
            assert "Action: failed" in status
            assert "Status: 5.1.1" in status
            assert "Remote-MTA: dns; mx.remote.test" in status
            assert "carol@remote.test" not in status
            assert bounce.startswith(b"Return-Path: <>\r\n")
            assert b"Subject: to a typo" in bounce  # the returned header
            assert len(await messages_of(remote, "carol@remote.test")) == 1
            nursery.cancel_scope.cancel()


async def test_null_mx_and_unknown_domain_bounce(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            zone = Zone()
            zone.add("nullmx.test", "MX", "0 .")
            dns = await nursery.start(serve_dns, zone)
            stack = await sending_stack(stack_factory, dns, 9)
            to = ["x@nullmx.test", "y@nxdomain.test"]
            await submit(stack, message(to), to)
            await until(lambda: count(stack, SENDER))
            await wait_until_queue_empty(stack)
            statuses = [delivery_status(raw) for raw in await messages_of(stack, SENDER)]
            text = "\n".join(statuses)
            assert "Status: 5.1.10" in text and "x@nullmx.test" in text
            assert "Status: 5.1.2" in text and "y@nxdomain.test" in text
            nursery.cancel_scope.cancel()


async def test_next_mx_is_tried_and_temporary_dns_failure_waits(
    stack_factory: StackFactory,
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            zone = Zone()
            # The preferred MX refuses connections (nothing listens on 127.0.0.2).
            zone.add("stub.test", "MX", "5 dead.stub.test.", "10 mx.stub.test.")
            zone.add("dead.stub.test", "A", "127.0.0.2")
            zone.add("mx.stub.test", "A", "127.0.0.1")
            zone.fail("broken.test")
            dns = await nursery.start(serve_dns, zone)
            stub = SmtpStub()
            port = await nursery.start(stub.serve)
            stack = await sending_stack(stack_factory, dns, port)
            await submit(stack, message(["erin@stub.test"]), ["erin@stub.test"])
            await submit(stack, message(["z@broken.test"]), ["z@broken.test"])
            await until(stub.has_accepted)
            # broken.test stays queued (SERVFAIL is temporary), nothing bounces.
            while True:
                entries = await stack.store.list_queue()
                if len(entries) == 1 and entries[0].recipients[0].attempts >= 2:
                    break
                await trio.sleep(0.05)
            [entry] = entries
            assert entry.recipients[0].address == "z@broken.test"
            assert "4.4.3" in entry.recipients[0].last_result
            assert await messages_of(stack, SENDER) == []
            nursery.cancel_scope.cancel()


async def test_mail_loop_stops(stack_factory: StackFactory) -> None:
    """The remote hands every message straight back to our submission (as a
    forwarding loop between two systems would): each round adds Received
    fields until our hop limit refuses it."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, zone_for("stub.test"))
            refusals: list[int] = []
            stack_box: list[Stack] = []

            async def forward_back(sender: str, recipients: list[str], content: bytes) -> None:
                host, port = stack_box[0].addr("submission")
                looped = (
                    b"Received: from stub.test by stub.test; Sun, 29 Nov 2026 00:00:00 +0000\r\n"
                )

                def resubmit() -> None:
                    with smtplib.SMTP(host, port) as client:
                        client.login(SENDER, PASSWORD)
                        try:
                            client.sendmail(sender, recipients, looped + content)
                        except smtplib.SMTPDataError as exc:
                            refusals.append(exc.smtp_code)

                await trio.to_thread.run_sync(resubmit)

            stub = SmtpStub(on_accept=forward_back)
            port = await nursery.start(stub.serve)
            stack = await stack_factory(
                services=["submission", "queue"],
                submission={"allow_plaintext_auth_on_loopback": True, "max_hops": 8},
                dns=DnsConfig(nameservers=(dns,)),
                outbound={"enabled": True, "port": port, **FAST_RETRY},
            )
            stack_box.append(stack)
            await submit(stack, message(["loop@stub.test"]), ["loop@stub.test"])

            async def refused() -> bool:
                return bool(refusals)

            await until(refused)
            await wait_until_queue_empty(stack)
            await trio.sleep(0.5)
            assert refusals == [554]
            # Two Received per round (ours and the stub's): 8 allowed, the 5th round refused.
            assert len(stub.accepted) == 5
            nursery.cancel_scope.cancel()


async def test_queued_message_over_hop_limit_bounces(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, zone_for("stub.test"))
            stub = SmtpStub()
            port = await nursery.start(stub.serve)
            stack = await sending_stack(stack_factory, dns, port, max_hops=3)
            trace = b"".join(
                b"Received: from a%d.test by b.test; Sun, 29 Nov 2026 00:00:00 +0000\r\n" % i
                for i in range(3)
            )
            host, sub_port = stack.addr("submission")

            def send() -> None:
                with smtplib.SMTP(host, sub_port) as client:
                    client.login(SENDER, PASSWORD)
                    client.sendmail(
                        SENDER,
                        ["x@stub.test"],
                        trace + message(["x"]).as_bytes(policy=email.policy.SMTP),
                    )

            await trio.to_thread.run_sync(send)
            await until(lambda: count(stack, SENDER))
            [bounce] = await messages_of(stack, SENDER)
            assert "Status: 5.4.6" in delivery_status(bounce)
            assert stub.transactions == 0
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("listener", ["smtp"])
async def test_inbound_hop_limit(stack_factory: StackFactory, listener: str) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=[listener], smtp={"max_hops": 2})
        host, port = stack.addr(listener)
        trace = b"Received: from a by b; Sun, 29 Nov 2026 00:00:00 +0000\r\n"

        def send(hops: int) -> int:
            with smtplib.SMTP(host, port) as client:
                try:
                    client.sendmail(
                        "x@elsewhere.test", ["bob@example.test"], trace * hops + b"\r\nhi\r\n"
                    )
                except smtplib.SMTPDataError as exc:
                    return exc.smtp_code
                return 250

        assert await trio.to_thread.run_sync(send, 2) == 250
        assert await trio.to_thread.run_sync(send, 3) == 554
        assert len(await messages_of(stack, "bob@example.test")) == 1


async def test_delay_warning_then_expiry(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, zone_for("stub.test"))
            stub = SmtpStub(refuse={"slow@stub.test": "450 4.2.1 mailbox busy"})
            port = await nursery.start(stub.serve)
            stack = await sending_stack(
                stack_factory, dns, port, delay_warning_seconds=0.3, max_age_seconds=2.0
            )
            await submit(stack, message(["slow@stub.test"]), ["slow@stub.test"])

            async def two_notices() -> bool:
                return await count(stack, SENDER) >= 2

            await until(two_notices)
            await wait_until_queue_empty(stack)
            delayed, expired = [delivery_status(raw) for raw in await messages_of(stack, SENDER)]
            assert "Action: delayed" in delayed and "Status: 4.2.1" in delayed
            assert "Action: failed" in expired and "Status: 4.4.7" in expired
            assert "450 4.2.1 mailbox busy" in expired
            assert stub.connections >= 3  # retried with backoff in between
            nursery.cancel_scope.cancel()


async def test_no_bounce_for_a_bounce(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            zone = Zone()
            zone.add("nullmx.test", "MX", "0 .")
            dns = await nursery.start(serve_dns, zone)
            stack = await sending_stack(stack_factory, dns, 9)
            await stack.store.enqueue(
                Outgoing("", ("x@nullmx.test",)), b"Subject: a DSN\r\n\r\nreport\r\n"
            )
            await wait_until_queue_empty(stack)
            await trio.sleep(0.5)
            assert await stack.store.list_queue() == []
            assert await count(stack, SENDER) == 0
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_smarthost_with_tls_and_auth(
    stack_factory: StackFactory, tmp_path: Path, mode: str
) -> None:
    """The relay is another mailstack's submission service: it insists on
    TLS before AUTH and queues what it accepts (its queue is not running)."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, Zone())
            relay = await stack_factory(services=["submission"], outbound={"enabled": True})
            host, port = relay.addr("submission", implicit_tls=mode == "implicit")
            password_file = tmp_path / "relay-password"
            password_file.write_text(PASSWORD + "\n")
            stack = await sending_stack(
                stack_factory,
                dns,
                25,
                smarthost=f"{host}:{port}",
                smarthost_tls=mode,
                smarthost_username=SENDER,
                smarthost_password_file=str(password_file),
                tls_ca_file=str(relay.ca_pem_path),
            )
            await submit(stack, message(["zed@far.test"]), ["zed@far.test"])
            await wait_until_queue_empty(stack)
            [relayed] = await relay.store.list_queue()
            assert relayed.sender == SENDER
            assert [r.address for r in relayed.recipients] == ["zed@far.test"]
            content = await relay.store.read_queued_content(relayed.id)
            assert content.count(b"Received:") == 2
            nursery.cancel_scope.cancel()


async def test_unverified_certificate_opportunistic_or_required(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The remote's certificate is from a CA the sender does not trust:
    remote.test gets its mail over unverified TLS (and a log line);
    strict.test, listed in require_tls_domains, keeps waiting."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, zone_for("remote.test", "strict.test"))
            remote = await remote_stack(stack_factory, "carol@remote.test")
            await remote.store.add_domain("strict.test")
            await remote.store.add_account("dan@strict.test", "x")
            _, mx_port = remote.addr("smtp")
            stack = await sending_stack(
                stack_factory, dns, mx_port, require_tls_domains=["strict.test"]
            )
            to = ["carol@remote.test", "dan@strict.test"]
            await submit(stack, message(to), to)
            await until(lambda: count(remote, "carol@remote.test"))
            [delivered] = await messages_of(remote, "carol@remote.test")
            assert b"(using TLS" in delivered.split(b"\r\n\r\n")[0]

            async def strict_retried() -> bool:
                entries = await stack.store.list_queue()
                return bool(entries) and entries[0].recipients[-1].attempts >= 2

            await until(strict_retried)
            [entry] = await stack.store.list_queue()
            strict = entry.recipients[-1]
            assert strict.address == "dan@strict.test"
            assert "4.7.5" in strict.last_result and "certificate" in strict.last_result
            assert await count(remote, "dan@strict.test") == 0
            assert "did not verify" in caplog.text
            nursery.cancel_scope.cancel()


async def test_two_queue_workers_on_postgresql_deliver_each_recipient_once(
    stack_factory: StackFactory, pg_url: str
) -> None:
    """Two hosts' queue services on one PostgreSQL store claim from the
    same queue: leases keep them from ever sending a recipient twice."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, zone_for("one.test", "two.test", "three.test"))
            stub = SmtpStub()
            port = await nursery.start(stub.serve)
            shared = {
                "database": {"url": pg_url},
                "dns": DnsConfig(nameservers=(dns,)),
                "outbound": {"enabled": True, "port": port, **FAST_RETRY, "poll_seconds": 0.05},
            }
            first = await stack_factory(
                services=["submission", "queue"],
                submission={"allow_plaintext_auth_on_loopback": True},
                **shared,
            )
            await stack_factory(services=["queue"], **shared)
            to = ["a@one.test", "b@one.test", "c@two.test", "d@three.test"]
            for number in range(12):
                await submit(first, message(to, f"message {number}"), to)
            await wait_until_queue_empty(first)
            await trio.sleep(0.5)
            sent = sorted(
                (parse(content)["Subject"], recipient)
                for _, recipients, content in stub.accepted
                for recipient in recipients
            )
            expected = sorted((f"message {n}", r) for n in range(12) for r in to)
            assert sent == expected
            nursery.cancel_scope.cancel()


async def test_lease_is_renewed_while_a_slow_delivery_runs(stack_factory: StackFactory) -> None:
    """A delivery that outlasts lease_seconds keeps its lease (renewed), so
    the second worker on the same store never starts it a second time."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, zone_for("stub.test"))
            gate = trio.Event()
            stub = SmtpStub(stall=gate)
            port = await nursery.start(stub.serve)
            outbound = {"enabled": True, "port": port, **FAST_RETRY, "lease_seconds": 0.6}
            first = await stack_factory(
                services=["submission", "queue"],
                submission={"allow_plaintext_auth_on_loopback": True},
                dns=DnsConfig(nameservers=(dns,)),
                outbound=outbound,
            )
            await stack_factory(
                services=["queue"],
                database={"url": first.config.database_url},
                dns=DnsConfig(nameservers=(dns,)),
                outbound=outbound,
            )
            await submit(first, message(["slow@stub.test"]), ["slow@stub.test"])
            await stub.stalled.wait()
            await trio.sleep(2.0)  # more than three lease periods
            assert stub.connections == 1
            gate.set()
            await wait_until_queue_empty(first)
            assert stub.connections == 1 and len(stub.accepted) == 1
            nursery.cancel_scope.cancel()


async def test_8bit_message_to_a_7bit_server_is_returned_not_mangled(
    stack_factory: StackFactory,
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, zone_for("old.test"))
            stub = SmtpStub(extensions=("PIPELINING",))
            port = await nursery.start(stub.serve)
            stack = await sending_stack(stack_factory, dns, port)
            host, sub_port = stack.addr("submission")
            body = "Subject: caf\u00e9\r\nContent-Type: text/plain; charset=utf-8\r\n"
            body += "Content-Transfer-Encoding: 8bit\r\n\r\nd\u00e9j\u00e0 vu\r\n"

            def send() -> None:
                with smtplib.SMTP(host, sub_port) as client:
                    client.login(SENDER, PASSWORD)
                    client.sendmail(
                        SENDER, ["x@old.test"], body.encode(), mail_options=["BODY=8BITMIME"]
                    )

            await trio.to_thread.run_sync(send)
            await until(lambda: count(stack, SENDER))
            [bounce] = await messages_of(stack, SENDER)
            status = delivery_status(bounce)
            assert "Status: 5.6.3" in status and "Diagnostic-Code" not in status
            assert stub.transactions == 0
            nursery.cancel_scope.cancel()


async def test_mx_refusing_the_session_passes_to_the_next(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            zone = Zone()
            zone.add("stub.test", "MX", "5 grumpy.stub.test.", "10 mx.stub.test.")
            zone.add("grumpy.stub.test", "A", "127.0.0.2")
            zone.add("mx.stub.test", "A", "127.0.0.1")
            dns = await nursery.start(serve_dns, zone)
            good = SmtpStub()
            port = await nursery.start(good.serve)
            grumpy = SmtpStub(greeting="554 5.3.2 not accepting mail")
            await nursery.start(grumpy.serve, "127.0.0.2", port)
            stack = await sending_stack(stack_factory, dns, port)
            await submit(stack, message(["erin@stub.test"]), ["erin@stub.test"])
            await until(good.has_accepted)
            await wait_until_queue_empty(stack)
            assert grumpy.connections == 1 and grumpy.transactions == 0
            assert len(good.accepted) == 1
            assert await count(stack, SENDER) == 0
            nursery.cancel_scope.cancel()


async def test_signed_message_reaches_remote_mx_and_verifies(
    stack_factory: StackFactory, tmp_path: Path
) -> None:
    """Submission signs (DKIM, [dkim]), the queue delivers, and the remote
    mailstack's MX checks SPF/DKIM/DMARC against the same test DNS: all
    pass, and dkimpy verifies the stored copy."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            key_path = tmp_path / "example.test.s1.key"
            dkim_keys.write_private(key_path, dkim_keys.generate("rsa", 1024))
            key = dkim_keys.parse("example.test", "s1", key_path.read_bytes())
            zone = zone_for("remote.test")
            zone.add(key.record_name, "TXT", txt(key.record_text))
            zone.add("example.test", "TXT", txt("v=spf1 ip4:127.0.0.1 -all"))
            zone.add("_dmarc.example.test", "TXT", txt("v=DMARC1; p=reject"))
            dns = await nursery.start(serve_dns, zone)
            remote = await stack_factory(
                services=["smtp"],
                hostname="mx.remote.test",
                smtp={"authentication_checks": True},
                dns=DnsConfig(nameservers=(dns,), timeout_seconds=2.0),
            )
            await remote.store.add_domain("remote.test")
            await remote.store.add_account("carol@remote.test", "x")
            _, mx_port = remote.addr("smtp")
            stack = await stack_factory(
                services=["submission", "queue"],
                hostname="mail.example.test",
                submission={"allow_plaintext_auth_on_loopback": True},
                dns=DnsConfig(nameservers=(dns,), timeout_seconds=2.0),
                dkim=DkimConfig(
                    keys=(DkimKey(domain="example.test", selector="s1", key_file=str(key_path)),)
                ),
                outbound={"enabled": True, "port": mx_port, **FAST_RETRY},
            )
            await submit(stack, message(["carol@remote.test"]), ["carol@remote.test"])
            await until(lambda: count(remote, "carol@remote.test"))
            await wait_until_queue_empty(stack)
            [stored] = await messages_of(remote, "carol@remote.test")
            [results] = [v for n, v in header_fields(stored) if n == "authentication-results"]
            assert "spf=pass" in results and "dkim=pass" in results and "dmarc=pass" in results
            dnsfunc = dkim_dnsfunc(sync_resolver(DnsConfig(nameservers=(dns,))))
            assert await trio.to_thread.run_sync(lambda: dkim.DKIM(stored).verify(dnsfunc=dnsfunc))
            nursery.cancel_scope.cancel()
