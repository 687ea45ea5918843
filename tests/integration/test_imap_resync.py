"""A mobile client's QRESYNC resync (RFC 7162 3.2.5) against the real server:
it caches a mailbox, goes away, another IMAP session and an SMTP delivery
change flags, expunge and add messages, and one SELECT ... (QRESYNC ...)
brings its cache exactly to the server's state.  Also: VANISHED during
IDLE, CONDSTORE's MODIFIED, and the answer after the expunge history was
pruned."""

from __future__ import annotations

import re
import smtplib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import trio

from tests.integration.conftest import Stack, StackFactory
from tests.integration.test_imap_sessions import ALICE, MESSAGE, Client, deliver, in_thread

FETCH = re.compile(rb"^\* (\d+) FETCH \((.*)\)\r\n$")
UID = re.compile(rb"UID (\d+)")
FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
MODSEQ = re.compile(rb"MODSEQ \((\d+)\)")
CODE = re.compile(rb"\[(UIDVALIDITY|HIGHESTMODSEQ) (\d+)\]")


def uid_set(text: bytes) -> set[int]:
    out: set[int] = set()
    for part in text.decode().split(","):
        lo, _, hi = part.partition(":")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


@dataclass
class Cache:
    """What a phone keeps of a mailbox between connections."""

    uidvalidity: int = 0
    highestmodseq: int = 0
    flags: dict[int, frozenset[bytes]] = field(default_factory=dict)
    vanished_reported: set[int] = field(default_factory=set)

    def apply(self, lines: list[bytes]) -> None:
        for line in lines:
            for name, value in CODE.findall(line):
                if name == b"UIDVALIDITY":
                    self.uidvalidity = int(value)
                else:
                    self.highestmodseq = int(value)
            if line.startswith(b"* VANISHED "):
                gone = uid_set(line.split()[-1])
                self.vanished_reported |= gone
                for uid in gone:
                    self.flags.pop(uid, None)
            match = FETCH.match(line)
            if match:
                body = match.group(2)
                uid, flags = UID.search(body), FLAGS.search(body)
                if uid and flags:
                    self.flags[int(uid.group(1))] = frozenset(flags.group(1).split())


def server_state(stack: Stack) -> dict[int, frozenset[bytes]]:
    client = Client.tls(stack)
    try:
        client.login()
        client.cmd("EXAMINE INBOX")
        cache = Cache()
        cache.apply(client.cmd("UID FETCH 1:* (FLAGS)"))
        return cache.flags
    finally:
        client.close()


def first_sync(stack: Stack) -> Cache:
    phone = Client.tls(stack)
    try:
        phone.login()
        assert b"* ENABLED QRESYNC\r\n" in phone.cmd("ENABLE QRESYNC")
        cache = Cache()
        cache.apply(phone.cmd("SELECT INBOX"))
        cache.apply(phone.cmd("UID FETCH 1:* (FLAGS)"))
        # The phone flags a message itself; its own STORE reports the MODSEQ.
        lines = phone.cmd("UID STORE 2 +FLAGS (\\Flagged)")
        assert MODSEQ.search(lines[0]), lines
        cache.apply(lines)
        phone.cmd("LOGOUT")
    finally:
        phone.close()
    return cache


def others_change_things(stack: Stack) -> set[int]:
    """Another session changes flags and expunges; SMTP delivers two
    messages, one of which is then flagged and one old one expunged."""
    other = Client.tls(stack)
    try:
        other.login()
        other.cmd("SELECT INBOX")
        other.cmd("UID STORE 1 +FLAGS (\\Seen $Important)")
        other.cmd("UID STORE 2 -FLAGS (\\Flagged)")
        other.cmd("UID STORE 3,5 +FLAGS (\\Deleted)")
        other.cmd("EXPUNGE")
        _, port = stack.addr("smtp")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.sendmail("bob@example.test", [ALICE[0]], MESSAGE)
            smtp.sendmail("bob@example.test", [ALICE[0]], MESSAGE)
        other.cmd("NOOP")
        other.cmd("UID STORE 7 +FLAGS (\\Answered)")
        other.cmd("UID STORE 6 +FLAGS (\\Deleted)")
        other.cmd("UID EXPUNGE 6")
        other.cmd("LOGOUT")
    finally:
        other.close()
    return {3, 5, 6}


def resync(stack: Stack, cache: Cache, extra: str = "") -> list[bytes]:
    phone = Client.tls(stack)
    try:
        phone.login()
        phone.cmd("ENABLE QRESYNC")
        lines = phone.cmd(
            f"SELECT INBOX (QRESYNC ({cache.uidvalidity} {cache.highestmodseq}{extra}))"
        )
        cache.apply(lines)
        phone.cmd("LOGOUT")
    finally:
        phone.close()
    return lines


async def test_mobile_client_resync_matches_server(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap", "smtp"))
        for _ in range(5):
            await deliver(stack)
        cache = await in_thread(first_sync, stack)
        assert sorted(cache.flags) == [1, 2, 3, 4, 5]
        before = cache.highestmodseq
        expunged = await in_thread(others_change_things, stack)
        lines = await in_thread(resync, stack, cache)
        assert lines[-1].startswith(b"t3 OK [READ-WRITE]"), lines
        # Exactly what vanished, exactly what changed: nothing more.
        vanished = [line for line in lines if line.startswith(b"* VANISHED")]
        assert vanished == [b"* VANISHED (EARLIER) 3,5:6\r\n"]
        assert cache.vanished_reported == expunged
        fetched = {int(UID.search(line).group(1)) for line in lines if FETCH.match(line)}  # type: ignore[union-attr]
        assert fetched == {1, 2, 7}  # changed flags and the new message
        assert all(MODSEQ.search(line) for line in lines if FETCH.match(line))
        assert cache.highestmodseq > before
        assert cache.flags == await in_thread(server_state, stack)
        # Up to date: nothing but the SELECT responses.
        again = await in_thread(resync, stack, cache)
        assert not [line for line in again if b"VANISHED" in line or FETCH.match(line)]


async def test_resync_after_history_was_pruned(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap", "smtp"))
        for _ in range(5):
            await deliver(stack)
        cache = await in_thread(first_sync, stack)
        await in_thread(others_change_things, stack)
        # Everything logged so far is "older than the retention".
        removed, _ = await stack.store.prune_expunge_log(datetime.now(UTC) + timedelta(days=1))
        assert removed == 3
        # known-uids 1:5 and sequence match data the phone still holds
        # (message 1 was UID 1, message 2 UID 2, message 4 UID 4).
        lines = await in_thread(resync, stack, cache, " 1:5 (1,2,4 1,2,4)")
        vanished = [line for line in lines if line.startswith(b"* VANISHED")]
        # Message 2 still is UID 2: UIDs 1 and 2 provably stayed; UID 4 is
        # now message 3, so above UID 2 every absent UID is reported.
        assert vanished == [b"* VANISHED (EARLIER) 3,5\r\n"]
        assert cache.flags == {
            uid: flags for uid, flags in (await in_thread(server_state, stack)).items() if uid <= 5
        }


async def test_vanished_replaces_expunge_for_idle_and_own_expunge(
    stack_factory: StackFactory,
) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        for _ in range(4):
            await deliver(stack)

        def talk() -> dict[str, list[bytes]]:
            phone, other = Client.tls(stack), Client.tls(stack)
            try:
                phone.login()
                other.login()
                phone.cmd("ENABLE QRESYNC")
                phone.cmd("SELECT INBOX")
                other.cmd("SELECT INBOX")
                phone.send(b"i1 IDLE\r\n")
                assert phone.line().startswith(b"+ ")
                other.cmd("UID STORE 2 +FLAGS (\\Deleted \\Seen)")
                pushed = [phone.line()]
                other.cmd("EXPUNGE")
                pushed.append(phone.line())
                phone.send(b"DONE\r\n")
                phone.until(b"i1")
                out = {"idle": pushed}
                out["store"] = phone.cmd("UID STORE 3 +FLAGS (\\Deleted)")
                out["expunge"] = phone.cmd("EXPUNGE")
                out["closed"] = phone.cmd("SELECT Drafts")
            finally:
                phone.close()
                other.close()
            return out

        out = await in_thread(talk)
        assert out["idle"][0].startswith(b"* 2 FETCH (UID 2 FLAGS (")
        assert MODSEQ.search(out["idle"][0]), out["idle"]
        assert out["idle"][1] == b"* VANISHED 2\r\n"
        assert b"* VANISHED 3\r\n" in out["expunge"]
        assert not any(b"EXPUNGE\r\n" in line for line in out["expunge"][:-1])
        assert out["closed"][0].startswith(b"* OK [CLOSED]")


async def test_conditional_store_reports_modified(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap",))
        for _ in range(3):
            await deliver(stack)

        def talk() -> dict[str, list[bytes]]:
            a, b = Client.tls(stack), Client.tls(stack)
            try:
                a.login()
                b.login()
                a.cmd("SELECT INBOX (CONDSTORE)")
                b.cmd("SELECT INBOX")
                modseqs = a.cmd("FETCH 1:3 (MODSEQ)")
                known = max(int(MODSEQ.search(line).group(1)) for line in modseqs[:-1])  # type: ignore[union-attr]
                b.cmd("STORE 2 +FLAGS (\\Seen)")
                return {
                    "store": a.cmd(f"STORE 1:3 (UNCHANGEDSINCE {known}) +FLAGS.SILENT (\\Flagged)"),
                    "search": a.cmd(f"SEARCH MODSEQ {known + 1}"),
                    "esearch": a.cmd(
                        f'UID SEARCH RETURN (MAX) MODSEQ "/flags/\\\\Seen" all {known}'
                    ),
                    "changed": a.cmd(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {known})"),
                }
            finally:
                a.close()
                b.close()

        out = await in_thread(talk)
        store = out["store"]
        assert store[-1].startswith(b"t4 OK [MODIFIED 2]"), store
        assert {line.split()[1] for line in store if b"FETCH (MODSEQ" in line} == {b"1", b"3"}
        assert re.match(rb"\* SEARCH 1 2 3 \(MODSEQ \d+\)\r\n", out["search"][0]), out["search"]
        assert re.match(rb'\* ESEARCH \(TAG "t\d+"\) UID MAX 3 MODSEQ \d+', out["esearch"][0])
        changed = [line for line in out["changed"] if FETCH.match(line)]
        assert len(changed) == 3 and all(MODSEQ.search(line) for line in changed)


async def test_uid_fetch_changedsince_vanished_and_refusals(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap", "smtp"))
        for _ in range(5):
            await deliver(stack)
        cache = await in_thread(first_sync, stack)
        await in_thread(others_change_things, stack)

        def talk() -> dict[str, list[bytes]]:
            phone, plain = Client.tls(stack), Client.tls(stack)
            try:
                phone.login()
                plain.login()
                plain.cmd("SELECT INBOX")
                out = {
                    "not_enabled": plain.cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)"),
                    "select_not_enabled": plain.cmd("SELECT INBOX (QRESYNC (1 1))"),
                }
                phone.cmd("ENABLE QRESYNC")
                out["bad_seq_match"] = phone.cmd("SELECT INBOX (QRESYNC (1 1 1:5 (1:2 1)))")
                phone.cmd("SELECT INBOX")
                since = cache.highestmodseq
                out["vanished"] = phone.cmd(
                    f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)"
                )
                out["some"] = phone.cmd(f"UID FETCH 4:6 (FLAGS) (CHANGEDSINCE {since} VANISHED)")
                # SEARCHRES (RFC 5182): SAVE with MIN alone keeps just the minimum.
                phone.cmd("SEARCH RETURN (SAVE MIN) ALL")
                out["saved"] = phone.cmd("UID FETCH $ (UID)")
            finally:
                phone.close()
                plain.close()
            return out

        out = await in_thread(talk)
        assert out["not_enabled"][-1].startswith(b"t3 BAD")
        assert out["select_not_enabled"][-1].startswith(b"t4 BAD")
        assert out["bad_seq_match"][-1].startswith(b"t3 BAD")
        vanished = out["vanished"]
        assert vanished[0] == b"* VANISHED (EARLIER) 3,5:6\r\n"
        fetched = [line for line in vanished if FETCH.match(line)]
        assert [UID.search(line).group(1) for line in fetched] == [b"1", b"2", b"7"]  # type: ignore[union-attr]
        assert all(MODSEQ.search(line) for line in fetched)
        assert [line for line in out["some"] if line.startswith(b"* ")] == [
            b"* VANISHED (EARLIER) 5:6\r\n"
        ]
        assert [line for line in out["saved"] if line.startswith(b"* ")] == [
            b"* 1 FETCH (UID 1)\r\n"
        ]
