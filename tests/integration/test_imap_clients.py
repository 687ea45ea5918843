"""IMAP against the real server with imaplib and imapclient over real TLS."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import imapclient
import pytest
import trio

from tests.integration.conftest import Stack, StackFactory

T = TypeVar("T")
ALICE = ("alice@example.test", "alice-password")
MESSAGE = (
    b"From: Bob Example <bob@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= plans\r\n"
    b"Date: Tue, 1 Sep 2026 10:00:00 +0000\r\n"
    b"Message-ID: <m1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Let's meet at the caf=C3=A9 tomorrow.\r\n"
    b"--b1\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Let's meet</p>\r\n"
    b"--b1--\r\n"
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


async def deliver(stack: Stack, raw: bytes, address: str = ALICE[0]) -> int:
    account = await stack.store.get_account(address)
    assert account is not None
    (stored,) = await stack.store.deliver([account.id], raw)
    return stored.uid


def imap_tls(stack: Stack) -> imaplib.IMAP4_SSL:
    _, port = stack.addr("imap", implicit_tls=True)
    return imaplib.IMAP4_SSL("localhost", port, ssl_context=stack.client_ssl_context(), timeout=10)


def client_tls(stack: Stack) -> imapclient.IMAPClient:
    _, port = stack.addr("imap", implicit_tls=True)
    return imapclient.IMAPClient(
        "localhost", port, ssl=True, ssl_context=stack.client_ssl_context(), timeout=10
    )


async def test_login_disabled_before_starttls_then_login(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=("imap",))
        host, port = stack.addr("imap")

        def talk() -> tuple[str, str, str]:
            conn = imaplib.IMAP4(host, port, timeout=10)
            try:
                before = " ".join(conn.capabilities).upper()
                try:
                    conn.login(*ALICE)
                    refused = ""
                except imaplib.IMAP4.error as exc:
                    refused = str(exc)
                conn.starttls(ssl_context=stack.client_ssl_context())
                after = " ".join(conn.capabilities).upper()
                typ, _ = conn.login(*ALICE)
                assert typ == "OK"
                return before, after, refused
            finally:
                conn.logout()

        before, after, refused = await in_thread(talk)
        assert "LOGINDISABLED" in before and "STARTTLS" in before
        assert "LOGINDISABLED" not in after and "AUTH=PLAIN" in after
        assert "PRIVACYREQUIRED" in refused or "STARTTLS" in refused


async def test_fetch_search_flag_copy_move_expunge_imaplib(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        uid = await deliver(stack, MESSAGE)

        def talk() -> dict[str, Any]:
            conn = imap_tls(stack)
            out: dict[str, Any] = {}
            try:
                conn.login(*ALICE)
                _, data = conn.select("INBOX")
                out["exists"] = data[0]
                out["fetch"] = conn.uid("FETCH", str(uid), "(UID RFC822.SIZE FLAGS BODY.PEEK[])")
                out["header"] = conn.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                out["part"] = conn.fetch("1", "(BODY.PEEK[1] BODY.PEEK[1.MIME])")
                out["search_body"] = conn.search(None, "BODY", "meet")
                out["search_subj"] = conn.uid("SEARCH", "SUBJECT", "plans")
                out["search_none"] = conn.search(None, "FROM", "nobody")
                out["store"] = conn.store("1", "+FLAGS", "(\\Flagged)")
                out["flagged"] = conn.search(None, "FLAGGED")
                out["copy"] = conn.copy("1", "Archive")
                out["move"] = conn.uid("MOVE", str(uid), "Trash")
                out["after_move"] = conn.select("INBOX")
                out["trash"] = conn.select("Trash")
                conn.store("1", "+FLAGS", "(\\Deleted)")
                out["expunge"] = conn.expunge()
                out["status"] = conn.status("Archive", "(MESSAGES UIDNEXT UNSEEN SIZE)")
                out["list"] = conn.list()
            finally:
                conn.logout()
            return out

        out = await in_thread(talk)
        assert out["exists"] == b"1"
        typ, fetched = out["fetch"]
        assert typ == "OK"
        assert fetched[0][1] == MESSAGE
        assert b"RFC822.SIZE %d" % len(MESSAGE) in fetched[0][0]
        assert out["header"][1][0][1] == b"Subject: =?utf-8?q?caf=C3=A9?= plans\r\n\r\n"
        part = out["part"][1]
        assert part[0][1] == b"Let's meet at the caf=C3=A9 tomorrow."
        assert b"quoted-printable" in part[1][1]
        assert out["search_body"] == ("OK", [b"1"])
        assert out["search_subj"] == ("OK", [str(uid).encode()])
        assert out["search_none"] == ("OK", [b""])
        assert b"\\Flagged" in out["store"][1][0]
        assert out["flagged"] == ("OK", [b"1"])
        assert out["copy"][0] == "OK"
        assert out["move"][0] == "OK"
        assert out["after_move"][1] == [b"0"]
        assert out["trash"][1] == [b"1"]
        assert out["expunge"] == ("OK", [b"1"])
        assert b"MESSAGES 1" in out["status"][1][0]
        names = b"\n".join(out["list"][1])
        assert b'"/" INBOX' in names and b"\\Trash" in names


async def test_imapclient_parses_envelope_and_bodystructure(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        await deliver(stack, MESSAGE)

        def talk() -> tuple[Any, Any, bytes, Any]:
            client = client_tls(stack)
            try:
                client.login(*ALICE)
                client.select_folder("INBOX")
                uids = client.search(["SUBJECT", "plans"])
                data = client.fetch(uids, ["ENVELOPE", "BODYSTRUCTURE", "FLAGS", "BODY[]"])
                (msgid,) = data
                appended = client.append("Drafts", b"Subject: draft\r\n\r\nhello\r\n", ["\\Draft"])
                client.select_folder("Drafts")
                draft = client.fetch(client.search("ALL"), ["BODY[]", "FLAGS"])
                return data[msgid], appended, draft[next(iter(draft))][b"BODY[]"], draft
            finally:
                client.logout()

        data, appended, draft_body, _ = await in_thread(talk)
        envelope = data[b"ENVELOPE"]
        assert envelope.subject == b"=?utf-8?q?caf=C3=A9?= plans"
        assert envelope.from_[0].mailbox == b"bob" and envelope.from_[0].host == b"example.test"
        assert envelope.from_[0].name == b"Bob Example"
        assert envelope.message_id == b"<m1@example.test>"
        body = data[b"BODYSTRUCTURE"]
        assert body.is_multipart
        assert body[1] == b"alternative"
        assert body[0][0][:2] == (b"text", b"plain")
        assert data[b"FLAGS"] == (b"\\Seen",)  # BODY[] without PEEK set \Seen
        assert b"APPENDUID" in appended
        assert draft_body == b"Subject: draft\r\n\r\nhello\r\n"


async def test_idle_gets_exists_for_delivery(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        ready = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def talk() -> tuple[Any, float]:
            client = client_tls(stack)
            try:
                client.login(*ALICE)
                client.select_folder("INBOX")
                client.idle()
                trio.from_thread.run_sync(ready.set, trio_token=token)
                started = time.monotonic()
                responses = client.idle_check(timeout=5)
                elapsed = time.monotonic() - started
                client.idle_done()
                return responses, elapsed
            finally:
                client.logout()

        async with trio.open_nursery() as nursery:
            result: list[Any] = []

            async def run() -> None:
                result.append(await in_thread(talk))

            nursery.start_soon(run)
            await ready.wait()
            await trio.sleep(0.2)
            await deliver(stack, MESSAGE)
        responses, elapsed = result[0]
        assert (1, b"EXISTS") in responses
        assert elapsed < 2.0


async def test_literal_too_big_refused_before_reading(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=("imap",))
        host, port = stack.addr("imap", implicit_tls=True)

        def talk() -> list[bytes]:

            raw = socket.create_connection((host, port), timeout=10)
            sock = stack.client_ssl_context().wrap_socket(raw, server_hostname="localhost")
            f = sock.makefile("rwb")
            lines = [f.readline()]
            f.write(b"a1 LOGIN {4294967296}\r\n")
            f.flush()
            lines.append(f.readline())
            f.write(b"a2 NOOP\r\n")
            f.flush()
            lines.append(f.readline())
            f.write(b"a3 FOO\r\n")
            f.flush()
            lines.append(f.readline())
            sock.close()
            return lines

        lines = await in_thread(talk)
        assert lines[0].startswith(b"* OK")
        assert lines[1].startswith(b"a1 NO [TOOBIG]")
        assert lines[2].startswith(b"a2 OK")
        assert lines[3].startswith(b"a3 BAD")


async def test_smtp_delivery_reaches_idle_and_fetch(stack_factory: StackFactory) -> None:
    """A message sent through the MX shows up as EXISTS in an IDLE session and
    is then fetched, searched, flagged, moved and expunged with imapclient."""
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp", "imap"))
        smtp_host, smtp_port = stack.addr("smtp")
        ready = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def watch() -> tuple[Any, dict[str, Any]]:
            client = client_tls(stack)
            out: dict[str, Any] = {}
            try:
                client.login(*ALICE)
                client.select_folder("INBOX")
                client.idle()
                trio.from_thread.run_sync(ready.set, trio_token=token)
                pushed = client.idle_check(timeout=10)
                client.idle_done()
                uids = client.search(["FROM", "bob", "BODY", "meet"])
                out["uids"] = uids
                out["fetch"] = client.fetch(uids, ["ENVELOPE", "RFC822.SIZE", "FLAGS"])
                client.add_flags(uids, [imapclient.FLAGGED])
                out["flagged"] = client.search(["FLAGGED"])
                client.move(uids, "Archive")
                out["inbox_after"] = client.search("ALL")
                client.select_folder("Archive")
                archived = client.search("ALL")
                client.delete_messages(archived)
                out["expunged"] = client.expunge()
                out["archive_after"] = client.search("ALL")
                return pushed, out
            finally:
                client.logout()

        def send() -> None:
            with smtplib.SMTP(smtp_host, smtp_port, timeout=30) as smtp:
                smtp.sendmail("bob@example.test", [ALICE[0]], MESSAGE)

        result: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                result.append(await in_thread(watch))

            nursery.start_soon(run)
            await ready.wait()
            await in_thread(send)
        pushed, out = result[0]
        assert (1, b"EXISTS") in pushed
        assert len(out["uids"]) == 1
        envelope = next(iter(out["fetch"].values()))[b"ENVELOPE"]
        assert envelope.message_id == b"<m1@example.test>"
        assert out["flagged"] == out["uids"]
        assert out["inbox_after"] == []
        assert out["archive_after"] == []
