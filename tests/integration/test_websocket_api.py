"""The WebSocket API against the real server with trio-websocket's client:
Basic auth in the handshake, the event feed (also for mail committed by
another process's store), every request type, and bad requests."""

from __future__ import annotations

import json
import logging
import os
import signal
import smtplib
import ssl
import time
from contextlib import AbstractAsyncContextManager
from email.message import EmailMessage
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket

from mailstack.config import Endpoint, TlsConfig
from mailstack.websocket import client
from mailstack.websocket.protocol import basic_authorization
from mailstack.websocket.server import warn_if_exposed
from tests.integration.conftest import Stack, StackFactory, write_certificate
from tests.support.tls import served_dns_names
from tests.support.ws import WsClient, connect

ALICE = ("alice@example.test", "alice-password")
SERVICES = ("smtp", "websocket")


def send_mail(stack: Stack, to: str, subject: str, body: str = "hello\r\n") -> float:
    """Send over SMTP; returns the monotonic time of the final 250."""
    host, port = stack.addr("smtp")
    message = EmailMessage()
    message["From"] = "Sender <sender@elsewhere.test>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.send_message(message)
        return time.monotonic()


def ws(
    stack: Stack, user: str = ALICE[0], password: str = ALICE[1]
) -> AbstractAsyncContextManager[WsClient]:
    host, port = stack.addr("websocket")
    return connect(host, port, user, password)


async def test_handshake_needs_basic_credentials(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=SERVICES)
        host, port = stack.addr("websocket")
        async with ws(stack) as client:
            assert client.hello["account"] == ALICE[0]
            assert client.hello["version"] == 1
        for headers in ([], [basic_authorization(ALICE[0], "wrong")]):
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket(host, port, "/", use_ssl=False, extra_headers=headers):
                    pass
            assert info.value.status_code == 401
            assert (b"www-authenticate", b'Basic realm="mailstack", charset="UTF-8"') in [
                (k.lower(), v) for k, v in info.value.headers
            ]
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket(
                host, port, "/elsewhere", use_ssl=False, extra_headers=[basic_authorization(*ALICE)]
            ):
                pass
        assert info.value.status_code == 404


async def test_wss_with_the_websocket_certificate(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        first = await stack_factory(services=("smtp",))
        tls = first.config.tls
        stack = await stack_factory(
            services=SERVICES, websocket={"cert_file": tls.cert_file, "key_file": tls.key_file}
        )
        host, port = stack.addr("websocket", implicit_tls=True)
        async with connect(host, port, *ALICE, ssl_context=stack.client_ssl_context()) as client:
            assert client.hello["account"] == ALICE[0]


async def test_sighup_reloads_the_websocket_certificate(
    stack_factory: StackFactory, tmp_path: Path
) -> None:
    """[websocket] has a certificate of its own: SIGHUP (systemctl reload)
    must bring a renewed one to the next client, like [tls]'s."""
    with trio.fail_after(30):
        ws_tls = TlsConfig(str(tmp_path / "ws-cert.pem"), str(tmp_path / "ws-key.pem"))
        ca = trustme.CA()
        write_certificate(ca, ws_tls, "localhost")
        stack = await stack_factory(
            services=SERVICES,
            handle_signals=True,
            websocket={"cert_file": ws_tls.cert_file, "key_file": ws_tls.key_file},
        )
        host, port = stack.addr("websocket", implicit_tls=True)
        context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())

        async def served_names() -> list[str]:
            return await served_dns_names(host, port, context)

        assert "renewed.test" not in await served_names()
        write_certificate(ca, ws_tls, "localhost", "renewed.test")
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):  # the reload runs in a worker thread
            if "renewed.test" in await served_names():
                break
            await trio.sleep(0.05)
        else:
            pytest.fail("SIGHUP did not reload the [websocket] certificate")


def test_plaintext_warning_only_off_loopback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mailstack.websocket"):
        warn_if_exposed([Endpoint("127.0.0.1", 8025), Endpoint("::1", 8025)], tls=False)
        warn_if_exposed([Endpoint("0.0.0.0", 8025)], tls=True)
        assert not caplog.records
        warn_if_exposed([Endpoint("0.0.0.0", 8025)], tls=False)
    assert "without TLS" in caplog.records[0].getMessage()


async def test_smtp_delivery_event_within_100_ms(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=SERVICES)
        async with ws(stack) as client:
            accepted = await trio.to_thread.run_sync(send_mail, stack, "alice@example.test", "fast")
            event = await client.event("message.new")
            latency = time.monotonic() - accepted
            assert latency < 0.1, f"message.new {latency * 1000:.0f} ms after the 250"
            assert event["mailbox"] == "INBOX"
            assert event["from"] == "sender@elsewhere.test"
            assert event["to"] == ["alice@example.test"]
            assert event["subject"] == "fast"
            assert event["size"] > 0 and event["uid"] >= 1 and event["date"]


async def test_events_of_another_process(stack_factory: StackFactory) -> None:
    """A second stack on the same database stands in for an SMTP service in
    another process: its commits reach this feed only through the change log."""
    with trio.fail_after(30):
        stack = await stack_factory(services=("websocket",))
        await events_of_another_process(stack_factory, stack)


async def test_events_of_another_host_on_postgresql(
    stack_factory: StackFactory, pg_url: str
) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=("websocket",), database={"url": pg_url})
        await events_of_another_process(stack_factory, stack)


async def events_of_another_process(stack_factory: StackFactory, stack: Stack) -> None:
    other = await stack_factory(services=("smtp",), database={"url": stack.config.database_url})
    assert other.store is not stack.store
    async with ws(stack) as client:
        # Brought by the file watch (SQLite, [database] change_check_seconds) or by
        # NOTIFY (PostgreSQL); the latency is bench/ws_bench.py's business.
        await trio.to_thread.run_sync(send_mail, other, "alice@example.test", "from afar")
        event = await client.event("message.new")
        assert event["subject"] == "from afar"


async def test_feed_events_for_every_change(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=SERVICES)
        store = stack.store
        account = await store.get_account(ALICE[0])
        assert account is not None
        async with ws(stack) as client:
            (stored,) = await store.deliver([account.id], b"Subject: one\r\n\r\nbody\r\n")
            new = await client.event()
            assert (new["event"], new["subject"], new["uid"]) == ("message.new", "one", stored.uid)
            await store.set_flags(stored.mailbox_id, [stored.uid], "add", ["\\Flagged"])
            flags = await client.event()
            assert flags["event"] == "message.flags" and flags["flags"] == ["\\Flagged"]
            await store.set_flags(stored.mailbox_id, [stored.uid], "add", ["\\Deleted"])
            await store.expunge(stored.mailbox_id)
            gone = await client.event("message.expunged")
            assert (gone["mailbox"], gone["uid"]) == ("INBOX", stored.uid)
            await store.create_mailbox(account.id, "Reports")
            assert (await client.event()) == {"event": "mailbox.created", "mailbox": "Reports"}
            await store.rename_mailbox(account.id, "Reports", "Old reports")
            renamed = await client.event()
            assert renamed == {
                "event": "mailbox.renamed",
                "mailbox": "Old reports",
                "old": "Reports",
            }
            await store.delete_mailbox(account.id, "Old reports")
            assert (await client.event()) == {"event": "mailbox.deleted", "mailbox": "Old reports"}


HTML_MESSAGE = (
    b"From: Shop <shop@elsewhere.test>\r\nTo: alice@example.test\r\n"
    b"Subject: =?utf-8?q?R=C3=A9ceipt?=\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b'--b1\r\nContent-Type: multipart/alternative; boundary="b2"\r\n\r\n'
    b"--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain body\r\n"
    b"--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html body</p>\r\n--b2--\r\n"
    b'--b1\r\nContent-Type: application/pdf; name="r.pdf"\r\n'
    b'Content-Disposition: attachment; filename="r.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n"
)


async def test_every_request_type(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=SERVICES)
        store = stack.store
        account = await store.get_account(ALICE[0])
        assert account is not None
        for n in range(1, 4):
            await store.deliver([account.id], f"Subject: note {n}\r\n\r\nnumber {n}\r\n".encode())
        (receipt,) = await store.deliver([account.id], HTML_MESSAGE)
        async with ws(stack) as client:
            mailboxes = await client.result("mailboxes")
            inbox = next(m for m in mailboxes if m["name"] == "INBOX")
            assert (inbox["messages"], inbox["unseen"]) == (4, 4)
            assert {m["name"] for m in mailboxes} >= {"INBOX", "Archive", "Trash"}

            page = await client.result("messages", limit=3)
            assert [m["subject"] for m in page["messages"]] == ["note 1", "note 2", "note 3"]
            assert page["total"] == 4 and page["next_after_uid"] == page["messages"][-1]["uid"]
            rest = await client.result("messages", after_uid=page["next_after_uid"])
            assert [m["uid"] for m in rest["messages"]] == [receipt.uid]
            assert rest["next_after_uid"] is None

            detail = await client.result("message", uid=receipt.uid)
            assert detail["subject"] == "Réceipt" and detail["from"] == "shop@elsewhere.test"
            assert detail["text"].strip() == "plain body"
            assert detail["html"].strip() == "<p>html body</p>"
            assert detail["attachments"] == [
                {
                    "filename": "r.pdf",
                    "content_type": "application/pdf",
                    "size": 9,
                    "content_id": None,
                }
            ]
            assert detail["raw"].encode() == HTML_MESSAGE
            assert "raw" not in await client.result("message", uid=receipt.uid, raw=False)

            found = await client.result("search", subject="note", text="number 2")
            assert [m["subject"] for m in found["messages"]] == ["note 2"]
            found = await client.result("search", **{"from": "shop@"}, unseen=True)
            assert [m["uid"] for m in found["messages"]] == [receipt.uid]
            found = await client.result("search", since="2999-01-01")
            assert found["total"] == 0

            flagged = await client.result("flags", uid=receipt.uid, add=["\\Seen", "$Paid"])
            assert flagged["messages"] == [{"uid": receipt.uid, "flags": ["$Paid", "\\Seen"]}]
            cleared = await client.result("flags", uids=[receipt.uid], remove=["$Paid"])
            assert cleared["messages"][0]["flags"] == ["\\Seen"]
            assert (await client.event("message.flags"))["uid"] == receipt.uid

            moved = await client.result("move", uids=[receipt.uid], to="Archive")
            assert moved["moved"][0]["uid"] == receipt.uid
            archived = await client.result("messages", mailbox="Archive")
            assert [m["subject"] for m in archived["messages"]] == ["Réceipt"]

            first_uid = page["messages"][0]["uid"]
            deleted = await client.result("delete", uids=[first_uid])
            assert deleted == {"deleted": [first_uid]}
            moved_away = await client.event("message.expunged")  # the move's
            assert (moved_away["mailbox"], moved_away["uid"]) == ("INBOX", receipt.uid)
            assert (await client.event("message.expunged"))["uid"] == first_uid
            assert (await client.result("messages"))["total"] == 2


async def test_wait_for_a_matching_message(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=SERVICES)
        async with ws(stack) as client:
            await client.send({"id": "w1", "type": "wait", "subject": "token", "timeout": 20})
            await client.send({"id": "w2", "type": "wait", "to": "nobody@", "timeout": 0.2})
            timed_out = await client.reply("w2")
            assert timed_out["error"]["code"] == "timeout"
            # Requests are answered while a wait is open.
            assert (await client.request("mailboxes"))["ok"]
            await trio.to_thread.run_sync(send_mail, stack, "alice@example.test", "unrelated")
            await trio.to_thread.run_sync(
                send_mail, stack, "alice@example.test", "your token", "code 1234\r\n"
            )
            matched = await client.reply("w1")
            assert matched["ok"] and matched["result"]["subject"] == "your token"
            # after_uid also finds messages that are already there.
            earlier = await client.result("wait", text="code 1234", after_uid=0, timeout=5)
            assert earlier["uid"] == matched["result"]["uid"]


async def test_bad_requests_get_errors_and_the_connection_stays(
    stack_factory: StackFactory,
) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=SERVICES)
        async with ws(stack) as client:
            await client.send("{not json")
            await client.send(json.dumps([1, 2]))
            errors = [await client.reply(None), await client.reply(None)]
            assert [e["error"]["code"] for e in errors] == ["bad_json", "bad_request"]
            bad = {
                "u": {"type": "frobnicate"},
                "m": {"type": "message"},
                "x": {"type": "messages", "limit": "ten"},
                "k": {"type": "mailboxes", "extra": 1},
                "n": {"type": "message", "uid": 999},
                "b": {"type": "messages", "mailbox": "Nowhere"},
                "t": {"type": "wait", "timeout": 10_000},
            }
            for request_id, body in bad.items():
                await client.send({"id": request_id, **body})
            codes = {rid: (await client.reply(rid))["error"]["code"] for rid in bad}
            assert codes == {
                "u": "unknown_type",
                "m": "bad_request",
                "x": "bad_request",
                "k": "bad_request",
                "n": "not_found",
                "b": "not_found",
                "t": "bad_request",
            }
            assert (await client.request("mailboxes"))["ok"]


async def test_accounts_see_only_their_own_mail(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=SERVICES)
        async with ws(stack, "bob@example.test", "bob-password") as bob, ws(stack) as alice:
            await trio.to_thread.run_sync(send_mail, stack, "alice@example.test", "for alice")
            assert (await alice.event("message.new"))["subject"] == "for alice"
            await trio.to_thread.run_sync(send_mail, stack, "bob@example.test", "for bob")
            assert (await bob.event("message.new"))["subject"] == "for bob"
            assert (await bob.result("messages"))["total"] == 1


async def test_watch_prints_new_messages(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=SERVICES)
        host, port = stack.addr("websocket")
        url = f"ws://{host}:{port}/"
        lines: list[str] = []
        hello, arrived = trio.Event(), trio.Event()

        def show(line: str) -> None:
            lines.append(line)
            (arrived if " uid " in line else hello).set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(client.watch, url, *ALICE, ssl_context=None, show=show))
            await hello.wait()
            await trio.to_thread.run_sync(send_mail, stack, "alice@example.test", "watched message")
            await arrived.wait()
            nursery.cancel_scope.cancel()
        assert lines[0] == "watching alice@example.test (protocol version 1)"
        assert "from sender@elsewhere.test  to alice@example.test" in lines[1]
        assert '"watched message"' in lines[1]
        with pytest.raises(client.WatchError, match="authentication failed"):
            await client.watch(url, ALICE[0], "wrong", ssl_context=None, show=show)


async def test_oversized_request_and_graceful_stop(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=SERVICES, websocket={"max_request_bytes": 1024})
        async with ws(stack) as big:
            await big.send({"id": 1, "type": "mailboxes", "pad": "x" * 2000})
            with pytest.raises(ConnectionClosed) as info:
                await big.reply(1)
            assert info.value.reason is not None and info.value.reason.code == 1009
        async with ws(stack) as client:
            stack.stop.set()
            with pytest.raises(ConnectionClosed) as info:
                await client.event()
            assert info.value.reason is not None and info.value.reason.code == 1001
            await stack.stopped.wait()
