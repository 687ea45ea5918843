"""SORT, THREAD and COMPRESS benchmark: mailstack against Dovecot, same run, same mail.

One account holds ``--messages`` messages (default 10,000, the mail of
``imap_bench.py``).  One client on loopback (plain TCP) times, for each
server, ``SORT (DATE)``, ``SORT (SUBJECT)``, ``SORT (REVERSE FROM DATE)``,
``THREAD REFERENCES`` and ``THREAD ORDEREDSUBJECT`` over the whole mailbox:
the first run (mailstack reads the mailbox's records; Dovecot builds its
sort and thread indexes) and the best of ``--repeat`` later runs.  Then it
counts the octets on the wire of ``FETCH 1:* (UID FLAGS RFC822.SIZE
ENVELOPE)`` without and with COMPRESS=DEFLATE (RFC 4978).

``--compare N`` instead fills both servers with N random messages of
tangled threads (replies, forwards, list tags, missing and duplicate
Message-IDs, unparsable dates) and prints whether each SORT and THREAD
answer is the same octets from both: Dovecot as the reference for RFC 5256.
Only SORT by internal date may differ, as the two stores' arrival times do.

    python bench/sort_bench.py
    python bench/sort_bench.py --messages 2000 --no-dovecot
    python bench/sort_bench.py --compare 400 --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import sys
import tempfile
import time
import zlib
from email.header import Header
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import imap_bench as ib  # the same mail, server process and Dovecot setup

from mailstack.auth.passwords import PasswordHasher
from mailstack.store import migrate
from mailstack.store.store import Store

COMMANDS = {
    "sort_date": "SORT (DATE) UTF-8 ALL",
    "sort_subject": "SORT (SUBJECT) UTF-8 ALL",
    "sort_reverse_from_date": "SORT (REVERSE FROM DATE) UTF-8 ALL",
    "thread_references": "THREAD REFERENCES UTF-8 ALL",
    "thread_orderedsubject": "THREAD ORDEREDSUBJECT UTF-8 ALL",
}
FETCH_ALL = "FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)"
COMPARED = (
    "THREAD REFERENCES UTF-8 ALL",
    "THREAD ORDEREDSUBJECT UTF-8 ALL",
    "SORT (SUBJECT) UTF-8 ALL",
    "SORT (FROM DATE) UTF-8 ALL",
    "SORT (CC) UTF-8 ALL",
    "SORT (DISPLAYFROM) UTF-8 ALL",
    "SORT (DISPLAYTO) UTF-8 ALL",
    "SORT (REVERSE SIZE) UTF-8 ALL",
    "SORT (DATE) UTF-8 SENTSINCE 1-Mar-2026",
)
SUBJECTS = ("lunch", "Report Q1", "[list] news", "plans", "", "hello  world", "Ärger")
PREFIXES = ("", "", "Re: ", "RE: ", "Fwd: ", "Re[2]: ", "[team] Re: ", "Fw: ", "re:re: ")


def tangled_messages(count: int, seed: int) -> list[bytes]:
    """Random mail whose threads and subjects exercise RFC 5256 2.1 and 3."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        subject = rng.choice(PREFIXES) + rng.choice(SUBJECTS) + rng.choice(("", " (fwd)", " "))
        if rng.random() < 0.05:
            subject = f"[Fwd: {subject}]"
        if not subject.isascii():
            subject = Header(subject, "utf-8").encode()  # RFC 2047, decoded first
        msgid = i if rng.random() > 0.05 else rng.randrange(max(i, 1))  # some duplicates
        refs = " ".join(f"<m{rng.randrange(count + 20)}@x>" for _ in range(rng.randrange(4)))
        date = f"Mon, {rng.randrange(1, 28)} Mar 2026 {rng.randrange(24):02d}:{i % 60:02d}:00 +0000"
        if rng.random() < 0.05:
            date = "not a date"
        fields = [
            f"From: {rng.choice(('Zoe <zoe@x.test>', 'bob@x.test', 'Carl <carl@x>', 'ann@y'))}",
            f"To: {rng.choice((ib.USER, 'Team: z@x, b@y;', 'Nobody:;', 'Al <x@y>'))}",
            f"Cc: {rng.choice(('a@x', 'b@x', 'Undisclosed:;'))}",
            f"Subject: {subject}",
            f"Date: {date}",
            f"Message-ID: <m{msgid}@x>",
        ]
        if refs:
            fields.append(f"References: {refs}")
        body = "body\r\n" * rng.randrange(1, 4)
        out.append(("\r\n".join(fields) + "\r\n\r\n" + body).encode())
    return out


async def prepare_in_order(directory: Path, mail: list[bytes]) -> None:
    """imap_bench's mailstack account, filled one message after the other so
    UIDs follow the list, as Dovecot's do."""
    config = ib.mailstack_config(directory)
    config.data_path.mkdir(parents=True)
    await trio.to_thread.run_sync(migrate.upgrade, config.database_url)
    store = await Store.open(config)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.add_domain("bench.test")
            password_hash = PasswordHasher(config.auth).hash(ib.PASSWORD)
            account = await store.add_account(ib.USER, password_hash)
            for raw in mail:
                await store.deliver([account.id], raw)
            nursery.cancel_scope.cancel()
    finally:
        await store.aclose()


def answers(host: str, port: int) -> dict[str, bytes]:
    conn = ib.Conn(host, port)
    conn.command(f'LOGIN {ib.USER} "{ib.PASSWORD}"')
    conn.command("SELECT INBOX")
    out = {}
    for number, command in enumerate(COMPARED):
        tag = f"c{number}".encode()
        conn.sock.sendall(tag + b" " + command.encode() + b"\r\n")
        lines = []
        while not (line := conn.line()).startswith(tag + b" "):
            lines.append(line)
        out[command] = b"".join(lines)
    conn.close()
    return out


async def compare(directory: Path, args: argparse.Namespace) -> None:
    mail = tangled_messages(args.compare, args.seed)
    await prepare_in_order(directory / "mailstack", mail)
    ib.make_message = lambda index: mail[index]  # what Dovecot.prepare writes
    async with ib.ServerProcess(directory / "mailstack") as srv:
        ours = await trio.to_thread.run_sync(answers, "127.0.0.1", srv.port)
    dovecot = Dovecot(directory / "dovecot", ib.free_port())
    dovecot.prepare(len(mail), 10)
    dovecot.start()
    try:
        theirs = await trio.to_thread.run_sync(answers, "127.0.0.1", dovecot.port)
    finally:
        dovecot.stop()
    for command in COMPARED:
        same = ours[command] == theirs[command]
        print(f"{'same' if same else 'DIFFERENT'}: {command}")
        if not same:
            print(f"  mailstack: {ours[command][:300]!r}\n  dovecot:   {theirs[command][:300]!r}")


class DeflatingSocket:
    """Deflates what is sent (a socket's sendall cannot be replaced)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH))

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def close(self) -> None:
        self.sock.close()


class CountingConn(ib.Conn):
    """imap_bench's client, counting octets received; after :meth:`compress`
    it deflates what it sends and inflates what it receives."""

    def __init__(self, host: str, port: int) -> None:
        self.wire = 0
        self.inflate: zlib._Decompress | None = None
        super().__init__(host, port)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        self.wire += len(data)
        self.buffer += data if self.inflate is None else self.inflate.decompress(data)

    def compress(self) -> None:
        self.command("COMPRESS DEFLATE")
        self.inflate = zlib.decompressobj(-15)
        self.sock = DeflatingSocket(self.sock)  # type: ignore[assignment]


def measure(host: str, port: int, repeat: int) -> dict[str, object]:
    conn = CountingConn(host, port)
    conn.command(f'LOGIN {ib.USER} "{ib.PASSWORD}"')
    conn.command("SELECT INBOX")
    figures: dict[str, object] = {}
    for name, command in COMMANDS.items():
        times = []
        for _ in range(repeat + 1):
            start = time.perf_counter()
            conn.command(command)
            times.append(time.perf_counter() - start)
        figures[f"{name}_first_ms"] = round(times[0] * 1000, 1)
        figures[f"{name}_best_ms"] = round(min(times[1:]) * 1000, 1)
    before = conn.wire
    conn.command(FETCH_ALL)
    figures["fetch_all_octets"] = conn.wire - before
    conn.compress()
    before = conn.wire
    conn.command(FETCH_ALL)
    figures["fetch_all_compressed_octets"] = conn.wire - before
    conn.command("LOGOUT")
    conn.close()
    return figures


async def bench_mailstack(directory: Path, args: argparse.Namespace) -> dict[str, object]:
    await ib.prepare_mailstack(directory, args.messages)
    async with ib.ServerProcess(directory) as srv:
        return await trio.to_thread.run_sync(measure, "127.0.0.1", srv.port, args.repeat)


class Dovecot(ib.Dovecot):
    def config_text(self, owner: object, connections: int) -> str:
        # COMPRESS=DEFLATE is the imap_zlib plugin in Dovecot 2.3.
        text = super().config_text(owner, connections)  # type: ignore[arg-type]
        return text + "protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n"


async def bench_dovecot(directory: Path, args: argparse.Namespace) -> dict[str, object]:
    dovecot = Dovecot(directory, ib.free_port())
    dovecot.prepare(args.messages, 10)
    dovecot.start()
    try:
        return await trio.to_thread.run_sync(measure, "127.0.0.1", dovecot.port, args.repeat)
    finally:
        dovecot.stop()


async def main(args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="sort-bench-"))
    results: dict[str, object] = {"messages": args.messages}
    if args.compare:
        try:
            await compare(directory, args)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    try:
        results["mailstack"] = await bench_mailstack(directory / "mailstack", args)
        print(f"mailstack: {results['mailstack']}", flush=True)
        if args.dovecot and ib.dovecot_available():
            results["dovecot"] = await bench_dovecot(directory / "dovecot", args)
            print(f"dovecot: {results['dovecot']}", flush=True)
        elif args.dovecot:
            print("dovecot: skipped (needs /usr/sbin/dovecot and root)")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(results, indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs after the first")
    parser.add_argument("--no-dovecot", dest="dovecot", action="store_false")
    parser.add_argument("--compare", type=int, default=0, metavar="N", help="compare with Dovecot")
    parser.add_argument("--seed", type=int, default=1, help="random mail for --compare")
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse_args())
