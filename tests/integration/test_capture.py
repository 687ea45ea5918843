"""Capture mode end to end: any recipient at any domain is accepted on the MX
and on submission (without AUTH), kept in isolated capture accounts, read
back over IMAP, POP3 and the WebSocket API; fault injection and retention
through real smtplib sessions."""

from __future__ import annotations

import dataclasses
import email
import imaplib
import poplib
import smtplib
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from functools import partial
from typing import Any

import pytest
import trio

from mailstack import check
from mailstack.config import CaptureInbox, ConfigError
from tests.integration.conftest import Stack, StackFactory
from tests.support.ws import connect

ALICE = ("alice@example.test", "alice-password")  # the default capture account
BOB = ("bob@example.test", "bob-password")  # team B's capture account
TEAM_B = CaptureInbox(account=BOB[0], catch=("team-b.example", "ci@shared.example"))
UNRELATED = ["someone@first-company.example", "ops@second.test", "x@third.invalid"]


def capture(**changes: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "enabled": True,
        "account": ALICE[0],
        "inboxes": (TEAM_B,),
        "fault_injection": True,
        "fault_delay_seconds": 0.3,
    }
    settings.update(changes)
    return settings


async def capture_stack(
    stack_factory: StackFactory, *, outbound: bool = False, **changes: Any
) -> Stack:
    return await stack_factory(
        services=("smtp", "submission", "imap", "pop3", "websocket"),
        imap={"allow_plaintext_login": True},
        pop3={"allow_plaintext_login": True},
        outbound={"enabled": outbound},
        capture=capture(**changes),
    )


def message(to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "app@sender.example"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"sent to {to}\n")
    return msg


def send(stack: Stack, to: list[str], subject: str, *, service: str = "smtp") -> None:
    host, port = stack.addr(service)
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.send_message(message(", ".join(to), subject), to_addrs=to)


def imap_messages(stack: Stack, user: str, password: str) -> list[email.message.Message]:
    host, port = stack.addr("imap")
    with imaplib.IMAP4(host, port, timeout=30) as client:
        client.login(user, password)
        client.select("INBOX", readonly=True)
        _, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
        return [
            email.message_from_bytes(item[1])
            for item in data
            if isinstance(item, tuple) and isinstance(item[1], bytes)
        ]


def pop3_count(stack: Stack, user: str, password: str) -> int:
    host, port = stack.addr("pop3")
    client = poplib.POP3(host, port, timeout=30)
    try:
        client.user(user)
        client.pass_(password)
        return int(client.stat()[0])
    finally:
        client.quit()


async def test_three_unrelated_domains_are_captured_and_nothing_leaves(
    stack_factory: StackFactory,
) -> None:
    with trio.fail_after(60):
        # The outbound queue is on (a config file cannot combine the two:
        # config.py refuses it), so a leak into relay code would show.
        stack = await capture_stack(stack_factory, outbound=True)
        host, port = stack.addr("websocket")
        async with connect(host, port, *ALICE) as client:
            for n, address in enumerate(UNRELATED):
                # Both listeners take any domain; submission without AUTH.
                service = "submission" if n == 1 else "smtp"
                await trio.to_thread.run_sync(
                    partial(send, stack, [address], f"to {address}", service=service)
                )
                event = await client.event("message.new")
                assert event["to"] == [address]

            over_imap = await trio.to_thread.run_sync(imap_messages, stack, *ALICE)
            assert [m["X-Envelope-To"] for m in over_imap] == [f"<{a}>" for a in UNRELATED]
            assert all(m["X-Envelope-From"] == "<app@sender.example>" for m in over_imap)
            assert all(m["Return-Path"] == "<app@sender.example>" for m in over_imap)

            for address in UNRELATED:
                found = await client.result("search", to=address)
                assert [m["subject"] for m in found["messages"]] == [f"to {address}"]
                detail = await client.result("message", uid=found["messages"][0]["uid"])
                assert f"X-Envelope-To: <{address}>" in detail["raw"]
            assert await trio.to_thread.run_sync(pop3_count, stack, *ALICE) == 3
        # Nothing was queued for outbound delivery, and the only mail in the
        # store is the capture account's three messages.
        assert await stack.store.list_queue() == []
        for address, expected in ((ALICE[0], 3), (BOB[0], 0)):
            account = await stack.store.get_account(address)
            assert account is not None
            counts = {m.name: m.messages for m in await stack.store.list_mailboxes(account.id)}
            assert counts["INBOX"] == expected and sum(counts.values()) == expected


async def test_capture_inboxes_are_isolated(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await capture_stack(stack_factory)
        host, port = stack.addr("websocket")
        async with connect(host, port, *BOB) as bob, connect(host, port, *ALICE) as alice:
            await trio.to_thread.run_sync(send, stack, ["dev@team-b.example"], "team b only")
            await trio.to_thread.run_sync(send, stack, ["CI@shared.example"], "ci address")
            # One message for both: each account's copy names only its own recipients.
            await trio.to_thread.run_sync(
                send, stack, ["qa@team-b.example", "someone@else.example"], "shared"
            )
            subjects = [(await bob.event("message.new"))["subject"] for _ in range(3)]
            assert subjects == ["team b only", "ci address", "shared"]
            assert (await alice.event("message.new"))["subject"] == "shared"
            assert (await alice.result("messages"))["total"] == 1
        bobs = await trio.to_thread.run_sync(imap_messages, stack, *BOB)
        alices = await trio.to_thread.run_sync(imap_messages, stack, *ALICE)
        assert [m["Subject"] for m in bobs] == ["team b only", "ci address", "shared"]
        assert bobs[2]["X-Envelope-To"] == "<qa@team-b.example>"
        assert [m["X-Envelope-To"] for m in alices] == ["<someone@else.example>"]
        assert await trio.to_thread.run_sync(pop3_count, stack, *ALICE) == 1


def smtp_outcome(stack: Stack, recipient: str) -> tuple[str, float]:
    """What a sending application sees for one message to ``recipient``."""
    host, port = stack.addr("smtp")
    started = time.monotonic()
    try:
        with smtplib.SMTP(host, port, timeout=30) as client:
            client.send_message(message(recipient, "fault"), to_addrs=[recipient])
    except smtplib.SMTPRecipientsRefused as exc:
        code = exc.recipients[recipient][0]
        return f"rcpt {code}", time.monotonic() - started
    except smtplib.SMTPDataError as exc:
        return f"data {exc.smtp_code}", time.monotonic() - started
    except smtplib.SMTPServerDisconnected:
        return "disconnected", time.monotonic() - started
    return "250", time.monotonic() - started


async def test_fault_injection(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await capture_stack(stack_factory)
        outcomes = {}
        for local in (
            "tempfail+a",
            "permfail+a",
            "disconnect+a",
            "slow+a",
            "tempfail-data+a",
            "permfail-data+a",
            "disconnect-data+a",
            "slow-data+a",
        ):
            outcomes[local] = await trio.to_thread.run_sync(
                smtp_outcome, stack, f"{local}@app.example"
            )
        results = {local: result for local, (result, _) in outcomes.items()}
        assert results == {
            "tempfail+a": "rcpt 451",
            "permfail+a": "rcpt 550",
            "disconnect+a": "disconnected",
            "slow+a": "250",
            "tempfail-data+a": "data 451",
            "permfail-data+a": "data 550",
            "disconnect-data+a": "disconnected",
            "slow-data+a": "250",
        }
        assert outcomes["slow+a"][1] >= 0.3 and outcomes["slow-data+a"][1] >= 0.3
        # Only the two slow messages were stored.
        stored = await trio.to_thread.run_sync(imap_messages, stack, *ALICE)
        assert sorted(m["X-Envelope-To"] for m in stored) == [
            "<slow+a@app.example>",
            "<slow-data+a@app.example>",
        ]


async def test_a_wait_on_the_server_is_not_a_client_timeout(stack_factory: StackFactory) -> None:
    # RFC 5321 4.5.3.2 times the client only: a stall at RCPT and one after
    # DATA, each longer than the command timeout, still end in 250, and the
    # session's watchdog still closes a client that then says nothing.
    with trio.fail_after(60):
        stack = await stack_factory(
            services=("smtp", "imap"),
            smtp={"command_timeout_seconds": 0.3},
            imap={"allow_plaintext_login": True},
            capture=capture(fault_delay_seconds=1.0),
        )
        host, port = stack.addr("smtp")

        def session() -> tuple[list[int], bytes, float]:
            codes = []
            with smtplib.SMTP(host, port, timeout=30) as client:
                for local in ("slow+a", "slow-data+a"):
                    recipient = f"{local}@app.example"
                    client.send_message(message(recipient, "slow"), to_addrs=[recipient])
                    codes.append(client.noop()[0])
                idle_since = time.monotonic()
                assert client.sock is not None
                ended = client.sock.recv(4096)
                return codes, ended, time.monotonic() - idle_since

        codes, ended, idle = await trio.to_thread.run_sync(session)
        assert codes == [250, 250]
        assert ended.startswith(b"421 4.4.2"), ended
        assert 0.25 < idle < 5, idle
        stored = await trio.to_thread.run_sync(imap_messages, stack, *ALICE)
        assert len(stored) == 2


async def test_fault_injection_needs_its_switch(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await capture_stack(stack_factory, fault_injection=False)
        result, _ = await trio.to_thread.run_sync(smtp_outcome, stack, "tempfail+a@app.example")
        assert result == "250"


async def test_retention_deletes_the_oldest_first(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await capture_stack(stack_factory, max_messages=3, retention_interval_seconds=1)
        account = await stack.store.get_account(ALICE[0])
        assert account is not None
        for n in range(5):
            await trio.to_thread.run_sync(send, stack, [f"user{n}@any.example"], f"message {n}")
        inbox = await stack.store.get_mailbox(account.id, "INBOX")
        while inbox is not None and inbox.messages > 3:
            await trio.sleep(0.1)
            inbox = await stack.store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        remaining = [m.headers["subject"] for m in await stack.store.list_messages(inbox.id)]
        assert remaining == ["message 2", "message 3", "message 4"]


async def test_retention_by_age(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await capture_stack(
            stack_factory, max_messages=0, max_age_seconds=3600, retention_interval_seconds=1
        )
        account = await stack.store.get_account(ALICE[0])
        assert account is not None
        now = datetime.now(UTC)
        for subject, age in (("old", timedelta(hours=2)), ("fresh", timedelta(minutes=5))):
            raw = f"Subject: {subject}\r\n\r\nx\r\n".encode()
            await stack.store.deliver([account.id], raw, internal_date=now - age)
        inbox = await stack.store.get_mailbox(account.id, "INBOX")
        while inbox is not None and inbox.messages > 1:
            await trio.sleep(0.1)
            inbox = await stack.store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        remaining = [m.headers["subject"] for m in await stack.store.list_messages(inbox.id)]
        assert remaining == ["fresh"]


async def test_missing_capture_account_stops_the_start(stack_factory: StackFactory) -> None:
    with trio.fail_after(60), pytest.raises(BaseException) as info:
        await stack_factory(
            services=("smtp",), capture={"enabled": True, "account": "nobody@example.test"}
        )
    error = info.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, ConfigError)
    assert "nobody@example.test does not exist" in str(error)


async def test_check_names_missing_capture_accounts(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await capture_stack(stack_factory)
        assert await trio.to_thread.run_sync(check.database_problems, stack.config) == []
        inboxes = (
            *stack.config.capture.inboxes,
            CaptureInbox("carol@example.test", ("c.example",)),
        )
        config = stack.config.replace(
            capture=dataclasses.replace(stack.config.capture, inboxes=inboxes)
        )
        problems = await trio.to_thread.run_sync(check.database_problems, config)
        assert [str(p) for p in problems] == [
            "capture: capture account carol@example.test does not exist: "
            "`mailstack user add carol@example.test`"
        ]
