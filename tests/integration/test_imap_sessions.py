"""IMAP sessions over real TLS sockets, line by line: what several sessions see
of each other's changes and when (RFC 9051 7.4.1), STARTTLS, AUTHENTICATE,
ENABLE IMAP4rev2, mailbox management and limits."""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from tests.integration.conftest import Stack, StackFactory

T = TypeVar("T")
ALICE = ("alice@example.test", "alice-password")
MESSAGE = b"From: bob@example.test\r\nSubject: hello\r\n\r\nbody text\r\n"


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


async def deliver(stack: Stack, raw: bytes = MESSAGE) -> int:
    account = await stack.store.get_account(ALICE[0])
    assert account is not None
    (stored,) = await stack.store.deliver([account.id], raw)
    return stored.uid


class Client:
    """A minimal blocking IMAP client that returns raw response lines."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.file.readline()
        self.counter = 0

    @classmethod
    def tls(cls, stack: Stack) -> Client:
        _, port = stack.addr("imap", implicit_tls=True)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        return cls(stack.client_ssl_context().wrap_socket(raw, server_hostname="localhost"))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def cmd(self, text: str | bytes) -> list[bytes]:
        self.counter += 1
        tag = b"t%d" % self.counter
        data = text.encode() if isinstance(text, str) else text
        self.send(tag + b" " + data + b"\r\n")
        return self.until(tag)

    def until(self, tag: bytes) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            line = self.line()
            if not line:
                raise EOFError(lines)
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def login(self) -> None:
        assert self.cmd(f'LOGIN {ALICE[0]} "{ALICE[1]}"')[-1].startswith(b"t1 OK")

    def close(self) -> None:
        self.sock.close()


async def test_expunge_is_deferred_during_fetch_store_search(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        for _ in range(3):
            await deliver(stack)

        def talk() -> dict[str, list[bytes]]:
            a, b = Client.tls(stack), Client.tls(stack)
            try:
                a.login()
                b.login()
                a.cmd("SELECT INBOX")
                b.cmd("SELECT INBOX")
                b.cmd("STORE 2 +FLAGS (\\Deleted)")
                b.cmd("EXPUNGE")
                out = {
                    "fetch": a.cmd("FETCH 3 (UID)"),
                    "store": a.cmd("STORE 3 +FLAGS (\\Seen)"),
                    "search": a.cmd("SEARCH ALL"),
                    "noop": a.cmd("NOOP"),
                    "after": a.cmd("FETCH 2 (UID)"),
                }
            finally:
                a.close()
                b.close()
            return out

        out = await in_thread(talk)
        for name in ("fetch", "store", "search"):
            assert not any(b"EXPUNGE" in line for line in out[name]), out[name]
        assert b"* 3 FETCH (UID 3)\r\n" in out["fetch"]
        # 2 is gone from the store but keeps its number until NOOP announces it.
        assert b"* SEARCH 1 3\r\n" in out["search"]
        assert b"* 2 EXPUNGE\r\n" in out["noop"]
        assert b"* 2 FETCH (UID 3)\r\n" in out["after"]


async def test_idle_pushes_flags_and_expunge_from_other_session(
    stack_factory: StackFactory,
) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        await deliver(stack)
        await deliver(stack)

        def talk() -> tuple[list[bytes], list[bytes]]:
            a, b = Client.tls(stack), Client.tls(stack)
            try:
                a.login()
                b.login()
                a.cmd("SELECT INBOX")
                b.cmd("SELECT INBOX")
                a.send(b"i1 IDLE\r\n")
                assert a.line().startswith(b"+ ")
                b.cmd("STORE 1 +FLAGS (\\Flagged)")
                flagged = [a.line()]
                b.cmd("STORE 2 +FLAGS (\\Deleted)")
                b.cmd("EXPUNGE")
                pushed: list[bytes] = []
                while not any(b"EXPUNGE" in line for line in pushed):
                    pushed.append(a.line())
                a.send(b"DONE\r\n")
                pushed += a.until(b"i1")
            finally:
                a.close()
                b.close()
            return flagged, pushed

        flagged, pushed = await in_thread(talk)
        assert flagged == [b"* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n"]
        assert b"* 2 EXPUNGE\r\n" in pushed
        assert pushed[-1].startswith(b"i1 OK")


async def test_starttls_discards_pipelined_plaintext(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=("imap",))
        host, port = stack.addr("imap")

        def talk() -> tuple[list[bytes], list[bytes]]:
            raw = socket.create_connection((host, port), timeout=10)
            plain = Client(raw)
            # An injected command after STARTTLS in the same packet.
            plain.send(b"s1 STARTTLS\r\ns2 LOGIN x y\r\n")
            first = plain.until(b"s1")
            sock = stack.client_ssl_context().wrap_socket(raw, server_hostname="localhost")
            secure = Client.__new__(Client)
            secure.sock, secure.file, secure.counter = sock, sock.makefile("rb"), 0
            caps = secure.cmd("CAPABILITY")
            sock.close()
            return first, caps

        first, caps = await in_thread(talk)
        assert first[-1].startswith(b"s1 OK")
        assert caps[0].startswith(b"* CAPABILITY") and b"AUTH=PLAIN" in caps[0]
        assert caps[-1].startswith(b"t1 OK")  # s2 never answered: it was discarded


async def test_authenticate_plain_sasl_ir_and_continuation(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=("imap",))
        token = base64.b64encode(f"\0{ALICE[0]}\0{ALICE[1]}".encode()).decode()
        bad = base64.b64encode(f"\0{ALICE[0]}\0wrong".encode()).decode()

        def talk() -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
            c1 = Client.tls(stack)
            wrong = c1.cmd(f"AUTHENTICATE PLAIN {bad}")
            ok = c1.cmd(f"AUTHENTICATE PLAIN {token}")
            c2 = Client.tls(stack)
            c2.send(b"a1 AUTHENTICATE LOGIN\r\n")
            prompts = [c2.line()]
            c2.send(base64.b64encode(ALICE[0].encode()) + b"\r\n")
            prompts.append(c2.line())
            c2.send(base64.b64encode(ALICE[1].encode()) + b"\r\n")
            prompts += c2.until(b"a1")
            c3 = Client.tls(stack)
            c3.send(b"a1 AUTHENTICATE PLAIN\r\n")
            cancelled = [c3.line()]
            c3.send(b"*\r\n")
            cancelled += c3.until(b"a1")
            for c in (c1, c2, c3):
                c.close()
            return wrong, ok, prompts, cancelled

        wrong, ok, prompts, cancelled = await in_thread(talk)
        assert wrong[-1].startswith(b"t1 NO [AUTHENTICATIONFAILED]")
        assert ok[-1].startswith(b"t2 OK [CAPABILITY")
        assert prompts[0] == b"+ VXNlcm5hbWU6\r\n" and prompts[1] == b"+ UGFzc3dvcmQ6\r\n"
        assert prompts[-1].startswith(b"a1 OK")
        assert cancelled[0] == b"+ \r\n" and cancelled[-1].startswith(b"a1 BAD")


async def test_rev2_esearch_mailbox_management(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        await deliver(stack, "Subject: café\r\n\r\nçà et là\r\n".encode())
        await deliver(stack)

        def talk() -> dict[str, list[bytes]]:
            c = Client.tls(stack)
            c.login()
            out = {
                "enable": c.cmd("ENABLE IMAP4rev2"),
                "select": c.cmd("SELECT INBOX"),
                "esearch": c.cmd("SEARCH RETURN (MIN MAX COUNT ALL) ALL"),
                "utf8": c.cmd(
                    "UID SEARCH CHARSET UTF-8 BODY {4+}\r\nçà".encode() + b" SUBJECT caf"
                ),
                "create": c.cmd("CREATE Projects/Entwürfe"),
                "dup": c.cmd("CREATE Projects/Entwürfe"),
                "list": c.cmd('LIST "" "Projects/*" RETURN (CHILDREN STATUS (MESSAGES SIZE))'),
                "parent": c.cmd('LIST "" "%"'),
                "rename_inbox": c.cmd("RENAME INBOX Old"),
                "old": c.cmd("STATUS Old (MESSAGES)"),
                "inbox": c.cmd("STATUS INBOX (MESSAGES)"),
                "delete_inbox": c.cmd("DELETE INBOX"),
                "special": c.cmd('LIST (SPECIAL-USE) "" "*"'),
                "namespace": c.cmd("NAMESPACE"),
                "bad_state": c.cmd("LOGIN a b"),
                "bad_option": c.cmd('LIST (NOSUCH) "" "*"'),
                "recursive_alone": c.cmd('LIST (RECURSIVEMATCH) "" "*"'),
                "subscribed": c.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"'),
            }
            c.close()
            return out

        out = await in_thread(talk)
        assert out["enable"][0] == b"* ENABLED IMAP4rev2\r\n"
        assert not any(b"RECENT" in line for line in out["select"])
        assert any(line.startswith(b'* LIST () "/" INBOX') for line in out["select"])
        assert out["esearch"][0] == b'* ESEARCH (TAG "t4") MIN 1 MAX 2 ALL 1:2 COUNT 2\r\n'
        assert out["utf8"][0] == b'* ESEARCH (TAG "t5") UID ALL 1\r\n'
        assert out["create"][-1].startswith(b"t6 OK")
        assert out["dup"][-1].startswith(b"t7 NO [ALREADYEXISTS]")
        listed = b"".join(out["list"])
        assert '"/" "Projects/Entwürfe"'.encode() in listed
        assert b"\\HasNoChildren" in listed and b"MESSAGES 0 SIZE 0" in listed
        parent = b"".join(out["parent"])
        assert b"Projects\r\n" in parent and b"\\HasChildren" in parent
        assert out["rename_inbox"][-1].startswith(b"t10 OK")
        assert b"MESSAGES 2" in out["old"][0] and b"MESSAGES 0" in out["inbox"][0]
        assert out["delete_inbox"][-1].startswith(b"t13 NO")
        special = b"".join(out["special"])
        assert b"\\Sent" in special and b"INBOX" not in special
        assert out["namespace"][0] == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
        assert out["bad_state"][-1].startswith(b"t16 BAD")
        assert out["bad_option"][-1].startswith(b"t17 BAD")
        assert out["recursive_alone"][-1].startswith(b"t18 BAD")
        subscribed = b"".join(out["subscribed"])
        assert b"\\Subscribed" in subscribed and subscribed.endswith(b"t19 OK LIST completed\r\n")


async def test_append_fetch_byte_for_byte_and_flags(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=("imap",))
        body = b"Subject: bin\r\n\r\n" + bytes(range(1, 256)) + b"\r\nend\r\n"

        def talk() -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
            c = Client.tls(stack)
            c.login()
            c.send(b"a1 APPEND Drafts (\\Draft $Custom) {%d}\r\n" % len(body))
            assert c.line().startswith(b"+ ")
            c.send(body + b"\r\n")
            appended = c.until(b"a1")
            c.cmd("SELECT Drafts")
            fetched = c.cmd("FETCH 1 (FLAGS RFC822)")
            missing = c.cmd("APPEND Nowhere {1+}\r\nx")
            c.cmd("ENABLE UTF8=ACCEPT")
            utf8_body = "Subject: Grüße\r\n\r\nçé\r\n".encode()
            c.send(b"u1 APPEND Drafts UTF8 (~{%d+}\r\n" % len(utf8_body) + utf8_body + b")\r\n")
            utf8_append = c.until(b"u1")
            utf8_append += c.cmd("UID FETCH * (ENVELOPE BODY.PEEK[])")
            c.close()
            return appended, fetched, missing, utf8_append

        appended, fetched, missing, utf8_append = await in_thread(talk)
        assert appended[-1].startswith(b"a1 OK [APPENDUID ")
        data = b"".join(fetched)
        assert b"RFC822 {%d}\r\n" % len(body) + body in data
        assert b"\\Draft" in data and b"$Custom" in data
        assert missing[-1].startswith(b"t4 NO [TRYCREATE]")
        # RFC 6855: APPEND UTF8 (literal8), and UTF-8 in quoted strings once enabled.
        utf8_data = b"".join(utf8_append)
        assert b"u1 OK [APPENDUID " in utf8_data
        assert '"Grüße"'.encode() in utf8_data
        assert "Subject: Grüße\r\n\r\nçé\r\n".encode() in utf8_data


async def test_autologout_and_per_account_limit(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(
            services=("imap",),
            imap={"idle_timeout_seconds": 1.0, "max_connections_per_account": 1},
        )

        def talk() -> tuple[list[bytes], list[bytes]]:
            a, b = Client.tls(stack), Client.tls(stack)
            a.login()
            second = b.cmd(f'LOGIN {ALICE[0]} "{ALICE[1]}"')
            b.close()
            bye = [a.line()]
            a.close()
            return second, bye

        second, bye = await in_thread(talk)
        assert second[-1].startswith(b"t1 NO [LIMIT]")
        assert bye[0].startswith(b"* BYE")


async def test_store_imap_reads(stack_factory: StackFactory) -> None:
    """Store.get_messages / list_uid_flags (added for IMAP, store/imap_reads.py)."""
    with trio.fail_after(30):
        stack = await stack_factory(services=("imap",))
        uids = [await deliver(stack) for _ in range(4)]
        account = await stack.store.get_account(ALICE[0])
        assert account is not None
        inbox = await stack.store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        await stack.store.set_flags(inbox.id, [uids[1]], "add", ["\\Seen"])
        got = await stack.store.get_messages(inbox.id, [uids[3], uids[1], 999])
        assert [r.uid for r in got] == [uids[1], uids[3]]
        assert got[0].envelope[1] == "hello"
        flags = await stack.store.list_uid_flags(inbox.id)
        assert flags == [(u, frozenset({"\\Seen"}) if u == uids[1] else frozenset()) for u in uids]


async def test_plaintext_authenticate_refused_before_tls(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=("imap",))
        host, port = stack.addr("imap")

        def talk() -> tuple[bytes, list[bytes], list[bytes]]:
            c = Client(socket.create_connection((host, port), timeout=10))
            refused = c.cmd("AUTHENTICATE PLAIN AGFsaWNlAHB3")
            unknown = c.cmd("AUTHENTICATE X-UNKNOWN")
            c.close()
            return c.greeting, refused, unknown

        greeting, refused, unknown = await in_thread(talk)
        assert b"LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting
        assert refused[-1].startswith(b"t1 NO [PRIVACYREQUIRED]")
        assert unknown[-1].startswith(b"t2 NO")


NESTED = (
    b"From: a@example.test\r\nSubject: nested\r\n"
    b"Content-Type: multipart/mixed; boundary=o\r\n\r\n"
    b"--o\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
    b"--o\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n"
    b"--i\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n"
    b"--i\r\nContent-Type: text/html\r\n\r\n<b>inner</b>\r\n--i--\r\n"
    b"--o--\r\n"
)


async def test_fetch_items_exactly(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=("imap",))
        await deliver(stack, NESTED)

        def talk() -> dict[str, bytes]:
            c = Client.tls(stack)
            c.login()
            c.cmd("EXAMINE INBOX")
            out = {
                name: b"".join(c.cmd("FETCH 1 " + items))
                for name, items in {
                    "partial": "BODY[]<10.20>",
                    "mime": "BODY[2.1.MIME]",
                    "nested": "(BODY[2.2] BODY[2.HEADER.FIELDS (SUBJECT)])",
                    "binary": "(BINARY[2.1] BINARY.SIZE[2.1])",
                    "rfc822": "(RFC822.HEADER RFC822.TEXT)",
                    "fast": "FAST",
                    "all": "ALL",
                    "full": "FULL",
                    "flags": "FLAGS",
                }.items()
            }
            c.close()
            return out

        out = await in_thread(talk)
        assert b"BODY[]<10> {20}\r\n" + NESTED[10:30] in out["partial"]
        assert b"BODY[2.1.MIME] {63}\r\nContent-Type: text/plain\r\n" in out["mime"]
        assert b"BODY[2.2] {12}\r\n<b>inner</b>" in out["nested"]
        assert b"BODY[2.HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: inner\r\n\r\n" in out["nested"]
        assert (
            b"BINARY[2.1] {5}\r\nhello" in out["binary"] and b"BINARY.SIZE[2.1] 5" in out["binary"]
        )
        header, text = NESTED.split(b"\r\n\r\n", 1)
        assert b"RFC822.HEADER {%d}\r\n" % (len(header) + 4) in out["rfc822"]
        assert b"RFC822.TEXT {%d}\r\n" % len(text) in out["rfc822"]
        assert b"RFC822.SIZE %d" % len(NESTED) in out["fast"] and b"ENVELOPE" not in out["fast"]
        assert b"INTERNALDATE" in out["all"] and b"ENVELOPE (" in out["all"]
        assert b'BODY (("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 5 1)(' in out["full"]
        # EXAMINE: fetching bodies did not set \Seen.
        assert b"FLAGS ()" in out["flags"]


async def test_graceful_stop_says_bye_to_idle_sessions(stack_factory: StackFactory) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(services=("imap",))
        logged_in = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def talk() -> tuple[bytes, bytes]:
            idle, idling = Client.tls(stack), Client.tls(stack)
            idle.login()
            idling.login()
            idling.cmd("SELECT INBOX")
            idling.send(b"i1 IDLE\r\n")
            assert idling.line().startswith(b"+ ")
            trio.from_thread.run_sync(logged_in.set, trio_token=token)
            return idle.line(), idling.line()

        result: list[tuple[bytes, bytes]] = []
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                result.append(await in_thread(talk))

            nursery.start_soon(run)
            await logged_in.wait()
            stack.stop.set()
        assert result[0] == (b"* BYE Server shutting down\r\n",) * 2
        with trio.fail_after(10):
            await stack.stopped.wait()


async def test_shared_record_cache_never_stale(stack_factory: StackFactory) -> None:
    """FETCH 1:* reads through the process-wide RecordCache; another session's
    STORE, APPEND and EXPUNGE must show at once."""
    with trio.fail_after(30):
        stack = await stack_factory(services=("imap",))
        for _ in range(3):
            await deliver(stack)

        def talk() -> list[list[bytes]]:
            a, b = Client.tls(stack), Client.tls(stack)
            a.login()
            b.login()
            a.cmd("SELECT INBOX")
            b.cmd("SELECT INBOX")
            seen = [a.cmd("FETCH 1:* (FLAGS)")]
            b.cmd("STORE 3 +FLAGS (\\Answered)")
            seen.append(a.cmd("FETCH 1:* (FLAGS)"))
            b.cmd("APPEND INBOX {5+}\r\nx: y\r\n")
            seen.append(a.cmd("NOOP"))
            seen.append(a.cmd("FETCH 1:* (UID)"))
            a.close()
            b.close()
            return seen

        first, second, noop, uids = await in_thread(talk)
        assert b"* 3 FETCH (FLAGS ())\r\n" in first
        assert any(b"* 3 FETCH (" in line and b"\\Answered" in line for line in second)
        assert b"* 4 EXISTS\r\n" in noop
        assert b"* 4 FETCH (UID 4)\r\n" in uids
