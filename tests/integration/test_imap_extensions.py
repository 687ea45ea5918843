"""IMAP extensions with real clients over real TLS: SORT/ESORT and THREAD
(imapclient and raw lines), COMPRESS=DEFLATE (imaplib with a deflating
socket layer, after STARTTLS and on the implicit-TLS port), QUOTA and
OVERQUOTA, MULTIAPPEND, BINARY and UTF8=ACCEPT."""

from __future__ import annotations

import imaplib
import re
import zlib
from typing import Any

import imapclient
import trio

from tests.integration.conftest import Stack, StackFactory
from tests.integration.test_imap_sessions import ALICE, Client, in_thread

SORT_CAPABILITIES = {b"SORT", b"SORT=DISPLAY", b"ESORT", b"THREAD=REFERENCES"}


def mail(subject: str, date: str, sender: str, extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\n{extra}\r\nbody of {subject}\r\n"
    ).encode()


async def deliver_all(stack: Stack, messages: list[bytes]) -> None:
    account = await stack.store.get_account(ALICE[0])
    assert account is not None
    for raw in messages:
        await stack.store.deliver([account.id], raw)


async def test_sort_and_thread_with_imapclient(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        await deliver_all(
            stack,
            [
                mail(
                    "Lunch",
                    "Tue, 3 Mar 2026 12:00:00 +0000",
                    "Zoe <zoe@x.test>",
                    "Message-ID: <1@x>\r\n",
                ),
                mail(
                    "Report",
                    "Mon, 2 Mar 2026 09:00:00 +0000",
                    "bob@x.test",
                    "Message-ID: <2@x>\r\n",
                ),
                mail(
                    "Re: Lunch",
                    "Tue, 3 Mar 2026 13:00:00 +0100",
                    "=?utf-8?q?=C3=84nne?= <anne@x.test>",
                    "Message-ID: <3@x>\r\nIn-Reply-To: <1@x>\r\n",
                ),
                mail("[team] Fwd: report", "garbage date", "carl@x.test", "Message-ID: <4@x>\r\n"),
            ],
        )
        _, port = stack.addr("imap", implicit_tls=True)

        def talk() -> dict[str, Any]:
            context = stack.client_ssl_context()
            with imapclient.IMAPClient("localhost", port, ssl=True, ssl_context=context) as client:
                client.login(*ALICE)
                capabilities = set(client.capabilities())
                client.select_folder("INBOX")
                return {
                    "caps": capabilities,
                    "subject": client.sort(["SUBJECT"]),
                    "reverse_date": client.sort(["REVERSE DATE"]),
                    "from": client.sort(["FROM"]),
                    "displayfrom": client.sort(["DISPLAYFROM", "ARRIVAL"]),
                    "searched": client.sort(["SIZE"], ["FROM", "bob"]),
                    "references": client.thread("REFERENCES"),
                    "ordered": client.thread("ORDEREDSUBJECT"),
                }

        got = await in_thread(talk)
        assert SORT_CAPABILITIES <= got["caps"]
        # Base subjects LUNCH, REPORT, LUNCH, REPORT; equal ones in mailbox order.
        assert got["subject"] == [1, 3, 2, 4]
        # Message 4's date is unparsable: its arrival (the latest) is used.
        assert got["reverse_date"] == [4, 1, 3, 2]
        assert got["from"] == [3, 2, 4, 1]  # anne, bob, carl, zoe
        # "Änne" decomposes to "A" + U+0308 (RFC 5051): before BOB@X.TEST.
        assert got["displayfrom"] == [3, 2, 4, 1]
        assert got["searched"] == [2]
        assert got["references"] == ((2, 4), (1, 3))
        assert got["ordered"] == ((2, 4), (1, 3))  # by the roots' dates


async def test_esort_uid_thread_and_charset(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        await deliver_all(
            stack,
            [mail(f"n{i}", f"Mon, {10 - i} Mar 2026 09:00:00 +0000", "a@x.test") for i in range(5)],
        )

        def talk() -> dict[str, list[bytes]]:
            client = Client.tls(stack)
            client.login()
            out = {"select": client.cmd("SELECT INBOX")}
            out["esort"] = client.cmd("UID SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 2:4")
            out["count"] = client.cmd("SORT RETURN (COUNT) (DATE) UTF-8 SUBJECT nothing")
            out["save"] = client.cmd("SORT RETURN (SAVE) (DATE) UTF-8 1:2")
            out["fetch_saved"] = client.cmd("FETCH $ (UID)")
            out["thread"] = client.cmd("UID THREAD ORDEREDSUBJECT UTF-8 ALL")
            out["badcharset"] = client.cmd("SORT (DATE) KOI8-R ALL")
            out["badalg"] = client.cmd("THREAD NOSUCH UTF-8 ALL")
            client.close()
            return out

        out = await in_thread(talk)
        # Dates descend with the UID: sort order by date is 4, 3, 2 (UIDs).
        assert out["esort"][0] == b'* ESEARCH (TAG "t3") UID MIN 4 MAX 2 ALL 4,3,2 COUNT 3\r\n'
        assert out["count"][0] == b'* ESEARCH (TAG "t4") COUNT 0\r\n'
        assert out["save"][-1].startswith(b"t5 OK")
        assert sorted(out["fetch_saved"][:-1]) == [
            b"* 1 FETCH (UID 1)\r\n",
            b"* 2 FETCH (UID 2)\r\n",
        ]
        assert out["thread"][0] == b"* THREAD (5)(4)(3)(2)(1)\r\n"
        assert b"[BADCHARSET" in out["badcharset"][-1]
        assert out["badalg"][-1].startswith(b"t9 BAD")


# imaplib refuses commands it does not know; COMPRESS is valid once logged in.
imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))


class DeflatingIMAP(imaplib.IMAP4):
    """imaplib has no COMPRESS: this layer deflates what it sends and
    inflates what it reads once :meth:`compress` succeeded (RFC 4978)."""

    deflate: Any = None
    inflate: Any = None
    pending = b""

    def compress(self) -> tuple[str, list[Any]]:
        typ, data = self._simple_command("COMPRESS", "DEFLATE")
        if typ == "OK" and self.deflate is None:
            self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
            self.inflate = zlib.decompressobj(-15)
        return typ, data

    def send(self, data: bytes) -> None:
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        super().send(data)

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise imaplib.IMAP4.abort("EOF")
        self.pending += self.inflate.decompress(chunk)

    def read(self, size: int) -> bytes:
        if self.inflate is None:
            return super().read(size)
        while len(self.pending) < size:
            self._more()
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    def readline(self) -> bytes:
        if self.inflate is None:
            return super().readline()
        while b"\n" not in self.pending:
            self._more()
        end = self.pending.index(b"\n") + 1
        line, self.pending = self.pending[:end], self.pending[end:]
        return line


class DeflatingIMAPSSL(DeflatingIMAP, imaplib.IMAP4_SSL):
    pass


def compressed_session(client: DeflatingIMAP, big: bytes) -> dict[str, Any]:
    client.login(*ALICE)
    out: dict[str, Any] = {"caps": client.capability()[1][0].split()}
    out["compress"] = client.compress()
    out["append"] = client.append("INBOX", None, None, big)
    out["select"] = client.select("INBOX")
    out["fetch"] = client.fetch("1", "(BODY.PEEK[])")
    out["again"] = client.compress()
    out["noop"] = client.noop()
    client.logout()
    return out


async def test_compress_after_starttls_and_on_implicit_tls(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        big = b"Subject: big\r\n\r\n" + b"the same line again and again\r\n" * 5000

        def plain_then_starttls() -> dict[str, Any]:
            _, port = stack.addr("imap")
            client = DeflatingIMAP("127.0.0.1", port)
            client.starttls(stack.client_ssl_context())
            return compressed_session(client, big)

        def implicit_tls() -> dict[str, Any]:
            _, port = stack.addr("imap", implicit_tls=True)
            return compressed_session(
                DeflatingIMAPSSL("localhost", port, ssl_context=stack.client_ssl_context()), big
            )

        for talk in (plain_then_starttls, implicit_tls):
            out = await in_thread(talk)
            assert b"COMPRESS=DEFLATE" in out["caps"]
            assert out["compress"][0] == "OK"
            assert out["append"][0] == "OK"
            assert out["fetch"][1][0][1] == big
            # RFC 4978 3: a second COMPRESS is refused.
            assert out["again"][0] == "NO" and b"[COMPRESSIONACTIVE]" in out["again"][1][0]
            assert out["noop"][0] == "OK"


async def test_quota_and_overquota(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        raw = b"Subject: q\r\n\r\n" + b"x" * 3000 + b"\r\n"
        _, port = stack.addr("imap", implicit_tls=True)

        def talk() -> dict[str, Any]:
            client = imaplib.IMAP4_SSL("localhost", port, ssl_context=stack.client_ssl_context())
            client.login(*ALICE)
            out: dict[str, Any] = {"caps": client.capability()[1][0].split()}
            out["none"] = client.getquotaroot("INBOX")
            return {**out, "client": client}

        def after_limits(client: imaplib.IMAP4_SSL) -> dict[str, Any]:
            out: dict[str, Any] = {}
            out["append1"] = client.append("INBOX", "(\\Deleted)", None, raw)
            out["root"] = client.getquotaroot("INBOX")
            out["quota"] = client.getquota('""')
            out["other"] = client._simple_command("GETQUOTA", '"nosuch"')
            out["set"] = client.setquota('""', "(STORAGE 1)")
            out["status"] = client.status("INBOX", "(MESSAGES DELETED DELETED-STORAGE SIZE)")
            out["append2"] = client.append("INBOX", None, None, raw)
            client.select("INBOX")
            out["copy"] = client.copy("1", "Archive")
            out["move"] = client._simple_command("MOVE", "1", "Archive")
            client.logout()
            return out

        first = await in_thread(talk)
        assert {b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE"} <= set(first["caps"])
        assert first["none"] == ("OK", [[b"INBOX"], [None]])  # no limits: no quota root
        await stack.store.set_quota(ALICE[0], 10 * 1024, 1)
        out = await in_thread(after_limits, first["client"])
        assert out["append1"][0] == "OK"
        assert out["root"] == ("OK", [[b'INBOX ""'], [b'"" (STORAGE 3 10 MESSAGE 1 1)']])
        assert out["quota"] == ("OK", [b'"" (STORAGE 3 10 MESSAGE 1 1)'])
        assert out["other"][0] == "NO"
        assert out["set"][0] == "NO" and b"[NOPERM]" in out["set"][1][0]
        status = out["status"][1][0]
        assert b"MESSAGES 1 DELETED 1 DELETED-STORAGE 3 SIZE 3016" in status
        # RFC 9208: OVERQUOTA on APPEND and COPY; a MOVE inside the account
        # frees what it takes.
        assert out["append2"][0] == "NO" and b"[OVERQUOTA]" in out["append2"][1][0]
        assert out["copy"][0] == "NO" and b"[OVERQUOTA]" in out["copy"][1][0]
        assert out["move"][0] == "OK"


async def test_multiappend_all_or_nothing(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))

        def talk() -> dict[str, list[bytes]]:
            client = Client.tls(stack)
            client.login()
            out = {
                "append": client.cmd(
                    b"APPEND Drafts (\\Seen) {6+}\r\nfirst! {6+}\r\nsecond"
                    b' (\\Flagged) "01-Feb-2024 10:00:00 +0000" {5+}\r\nthird'
                ),
                "status": client.cmd("STATUS Drafts (MESSAGES)"),
                "select": client.cmd("SELECT Drafts"),
                "fetch": client.cmd("FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])"),
            }
            client.close()
            return out

        def over_quota() -> dict[str, list[bytes]]:
            client = Client.tls(stack)
            client.login()
            out = {
                "append": client.cmd(b"APPEND Drafts {1+}\r\na {1+}\r\nb"),
                "status": client.cmd("STATUS Drafts (MESSAGES UIDNEXT)"),
            }
            client.close()
            return out

        out = await in_thread(talk)
        tagged = out["append"][-1]
        uidvalidity = re.search(rb"APPENDUID (\d+) ", tagged)
        assert uidvalidity is not None
        assert tagged.startswith(b"t2 OK [APPENDUID %s 1:3]" % uidvalidity.group(1))
        assert b"MESSAGES 3" in out["status"][0]
        fetched = b"".join(out["fetch"])
        assert b"first!" in fetched and b"second" in fetched and b"third" in fetched
        assert b'UID 3 FLAGS (\\Flagged) INTERNALDATE " 1-Feb-2024 10:00:00 +0000"' in fetched
        await stack.store.set_quota(ALICE[0], None, 4)
        out = await in_thread(over_quota)
        assert b"[OVERQUOTA]" in out["append"][-1]
        assert b"MESSAGES 3 UIDNEXT 4" in out["status"][0]


BINARY_MESSAGE = (
    "From: Jürgen <j@example.test>\r\n"
    "Subject: Grüße\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b"\r\n'
    "\r\n"
    "--b\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "caf=C3=A9 au =\r\nlait\r\n"
    "--b\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "AAECYmluYXJ5/w==\r\n"
    "--b\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Content-Transfer-Encoding: x-uuencode\r\n"
    "\r\n"
    "begin 644 x\r\n"
    "--b--\r\n"
).encode()


async def test_binary_and_utf8_accept(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        await deliver_all(stack, [BINARY_MESSAGE])

        def talk() -> dict[str, list[bytes]]:
            client = Client.tls(stack)
            client.login()
            client.cmd("SELECT INBOX")
            out = {
                "binary": client.cmd("FETCH 1 (BINARY.PEEK[1] BINARY.PEEK[2] BINARY.SIZE[2])"),
                "partial": client.cmd("FETCH 1 (BINARY.PEEK[2]<2.6>)"),
                "unknown": client.cmd("FETCH 1 (BINARY.PEEK[3])"),
                "envelope7": client.cmd("FETCH 1 (ENVELOPE)"),
                "enable": client.cmd("ENABLE UTF8=ACCEPT"),
                "envelope8": client.cmd("FETCH 1 (ENVELOPE)"),
                "append": client.cmd(
                    b"APPEND INBOX UTF8 (~{22+}\r\nSubject: \xc3\xa9t\xc3\xa9\r\n\r\nbody)"
                ),
                "fetch8": client.cmd("FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"),
            }
            client.close()
            return out

        out = await in_thread(talk)
        binary = b"".join(out["binary"])
        assert b"BINARY[1] {13}\r\ncaf\xc3\xa9 au lait" in binary  # quoted-printable undone
        assert b"BINARY[2] ~{10}\r\n\x00\x01\x02binary\xff" in binary  # NUL: literal8
        assert b"BINARY.SIZE[2] 10" in binary
        assert b"BINARY[2]<2> {6}\r\n\x02binar" in b"".join(out["partial"])
        assert b"[UNKNOWN-CTE]" in out["unknown"][-1]
        # Without UTF8=ACCEPT 8-bit header text goes as a literal ...
        assert b"{7}\r\nGr\xc3\xbc\xc3\x9fe" in b"".join(out["envelope7"])
        assert out["enable"][0] == b"* ENABLED UTF8=ACCEPT\r\n"
        # ... and after it as a quoted UTF-8 string (RFC 6855 3).
        envelope8 = b"".join(out["envelope8"])
        assert b'"Gr\xc3\xbc\xc3\x9fe"' in envelope8 and b'"J\xc3\xbcrgen"' in envelope8
        assert b" OK [APPENDUID " in out["append"][-1]
        assert b"Subject: \xc3\xa9t\xc3\xa9" in b"".join(out["fetch8"])
