"""POP3 retrieval benchmark: mailstack against Dovecot, same run, same mail.

Each mailbox holds ``--messages`` messages of ``--size`` bytes.  A client
logs in (not timed), then times STAT, UIDL and RETR of every message, one
command at a time as fetchmail/getmail do (``--pipeline N`` keeps N RETRs in
flight instead), then QUIT.  Clients are separate processes so their parsing
does not share the server's GIL; figures are messages and MB (10**6 bytes of
message content) per second over the wall-clock span from the first
client's start to the last client's end.

    python bench/pop3_bench.py                      # 1 and 10 mailboxes
    python bench/pop3_bench.py --concurrency 1 10 --messages 1000 --size 10240

Dovecot runs as a private instance (its own config, base_dir and maildir in a
temporary directory, a loopback port) when /usr/sbin/dovecot exists and the
bench runs as root; ``--no-dovecot`` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import rows  # bench/rows.py: the --json row format
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailstack.auth.authenticator import Authenticator
from mailstack.auth.passwords import PasswordHasher
from mailstack.config import AuthConfig, Config, Endpoint, Pop3Config
from mailstack.net import Bound
from mailstack.pop3 import server
from mailstack.service import ServiceContext
from mailstack.store import migrate
from mailstack.store.store import Store
from mailstack.tls import TlsProvider

PASSWORD = "bench-password"
DOMAIN = "bench.test"


def make_message(index: int, size: int) -> bytes:
    """A plain text message of exactly ``size`` octets, CRLF line endings,
    with some lines starting with "." so byte-stuffing is exercised."""
    header = (
        f"From: sender@{DOMAIN}\r\nTo: user@{DOMAIN}\r\nSubject: bench message {index}\r\n"
        f"Message-ID: <{index}.bench@{DOMAIN}>\r\n\r\n"
    ).encode()
    line = b".dotted line of benchmark text, seventy-six octets long, for POP3......\r\n"
    body = bytearray()
    while len(header) + len(body) + len(line) <= size:
        body += line
    body += b"x" * (size - len(header) - len(body) - 2) + b"\r\n"
    message = header + bytes(body)
    assert len(message) == size
    return message


# -- the client (a separate process per mailbox) ------------------------------


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def multiline(self) -> bytes:
        """The body of a multi-line reply (after its status line), stuffed."""
        start = 0
        while True:
            if self.buffer.startswith(b".\r\n"):
                del self.buffer[:3]
                return b""
            end = self.buffer.find(b"\r\n.\r\n", start)
            if end >= 0:
                body = bytes(self.buffer[: end + 2])
                del self.buffer[: end + 5]
                return body
            start = max(0, len(self.buffer) - 4)
            self._fill()


def expect_ok(line: bytes) -> bytes:
    if not line.startswith(b"+OK"):
        raise RuntimeError(f"unexpected reply: {line[:100]!r}")
    return line


def run_client(host: str, port: int, user: str, pipeline: int) -> dict[str, float]:
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = Reader(sock)
        expect_ok(reader.line())
        sock.sendall(f"USER {user}\r\n".encode())
        expect_ok(reader.line())
        sock.sendall(f"PASS {PASSWORD}\r\n".encode())
        expect_ok(reader.line())
        start = time.time()
        sock.sendall(b"STAT\r\n")
        count = int(expect_ok(reader.line()).split()[1])
        sock.sendall(b"UIDL\r\n")
        expect_ok(reader.line())
        uids = reader.multiline().count(b"\r\n")
        assert uids == count, (uids, count)
        octets = 0
        sent = 0
        for received in range(1, count + 1):
            while sent < min(count, received - 1 + pipeline):
                sent += 1
                sock.sendall(b"RETR %d\r\n" % sent)
            expect_ok(reader.line())
            octets += len(reader.multiline())
        sock.sendall(b"QUIT\r\n")
        expect_ok(reader.line())
        end = time.time()
    return {"start": start, "end": end, "messages": count, "octets": octets}


# -- mailstack ------------------------------------------------------------------


async def prepare_mailstack(
    directory: Path, mailboxes: int, messages: list[bytes]
) -> tuple[Config, Store]:
    config = Config(
        hostname="bench.test",
        data_dir=str(directory / "data"),
        auth=AuthConfig(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1),
        pop3=Pop3Config(
            listen=(Endpoint("127.0.0.1", 0),),
            allow_plaintext_login=True,
            max_connections_per_ip=0,
        ),
    )
    config.data_path.mkdir(parents=True)
    await trio.to_thread.run_sync(migrate.upgrade, config.database_url)
    store = await Store.open(config)
    await store.add_domain(DOMAIN)
    password_hash = PasswordHasher(config.auth).hash(PASSWORD)
    account_ids = []
    for n in range(mailboxes):
        account = await store.add_account(f"user{n}@{DOMAIN}", password_hash)
        account_ids.append(account.id)
    send, receive = trio.open_memory_channel[bytes](0)

    async def deliverer() -> None:
        async for raw in receive:
            await store.deliver(account_ids, raw)

    async with trio.open_nursery() as nursery:
        for _ in range(32):  # concurrent deliveries share group commits
            nursery.start_soon(deliverer)
        async with send:
            for raw in messages:
                await send.send(raw)
    return config, store


async def run_clients(
    host: str, port: int, users: list[str], pipeline: int, repeat_warmup: bool
) -> dict[str, float]:
    async def client(user: str, results: list[dict[str, float]]) -> None:
        command = [
            sys.executable,
            __file__,
            "--client",
            f"{host}:{port}:{user}:{pipeline}",
        ]
        done = await trio.run_process(command, capture_stdout=True)
        results.append(json.loads(done.stdout))

    if repeat_warmup:
        # One untimed pass first: Dovecot builds its index at the first
        # login, mailstack warms the SQLite page cache; both then run warm.
        warm: list[dict[str, float]] = []
        async with trio.open_nursery() as nursery:
            for user in users:
                nursery.start_soon(client, user, warm)
    results: list[dict[str, float]] = []
    async with trio.open_nursery() as nursery:
        for user in users:
            nursery.start_soon(client, user, results)
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    total = sum(r["messages"] for r in results)
    octets = sum(r["octets"] for r in results)
    return {"messages": total, "seconds": span, "msg_s": total / span, "mb_s": octets / span / 1e6}


async def bench_mailstack(
    directory: Path, concurrency: list[int], messages: list[bytes], pipeline: int
) -> dict[int, dict[str, float]]:
    config, store = await prepare_mailstack(directory, max(concurrency), messages)
    figures = {}
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)  # what service.run starts for its services
            ctx = ServiceContext(config, store, Authenticator(config, store), TlsProvider(config))
            bound: list[Bound] = await nursery.start(server.serve, ctx)
            host, port = bound[0].host, bound[0].port
            for n in concurrency:
                users = [f"user{i}@{DOMAIN}" for i in range(n)]
                figures[n] = await run_clients(host, port, users, pipeline, True)
            nursery.cancel_scope.cancel()
    finally:
        await store.aclose()
    return figures


# -- Dovecot -----------------------------------------------------------------------


@dataclass
class Dovecot:
    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    def config_text(self, owner: pwd.struct_passwd) -> str:
        d = self.directory
        return f"""
protocols = pop3
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = {owner.pw_uid}
mail_location = maildir:{d}/mail/%n
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={d}/home/%n
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""

    def prepare(self, mailboxes: int, messages: list[bytes]) -> None:
        owner = pwd.getpwnam("nobody")
        d = self.directory
        for sub in ("run", "state"):
            (d / sub).mkdir(parents=True)
        (d / "dovecot.conf").write_text(self.config_text(owner))
        with (d / "passwd").open("w") as passwd:
            for n in range(mailboxes):
                passwd.write(f"user{n}@{DOMAIN}:{{PLAIN}}{PASSWORD}\n")
        for n in range(mailboxes):
            maildir = d / "mail" / f"user{n}"
            for sub in ("cur", "new", "tmp"):
                (maildir / sub).mkdir(parents=True)
            for index, raw in enumerate(messages):
                lf = raw.replace(b"\r\n", b"\n")
                # S= and W= (size with CRLF) are what Dovecot's own delivery
                # writes, so it need not read each file to answer LIST.
                name = f"{1700000000 + index}.M{index}P1.bench,S={len(lf)},W={len(raw)}:2,"
                (maildir / "cur" / name).write_bytes(lf)
            (d / "home" / f"user{n}").mkdir(parents=True)
        for path in [d / "mail", d / "home", *(d / "mail").rglob("*"), *(d / "home").rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def start(self) -> None:
        config = str(self.directory / "dovecot.conf")
        self.process = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", config])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"+OK"):
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"dovecot did not start; see {self.directory}/dovecot.log")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def bench_dovecot(
    directory: Path, concurrency: list[int], messages: list[bytes], pipeline: int
) -> dict[int, dict[str, float]]:
    dovecot = Dovecot(directory, free_port())
    dovecot.prepare(max(concurrency), messages)
    dovecot.start()
    try:
        return {
            n: await run_clients(
                "127.0.0.1",
                dovecot.port,
                [f"user{i}@{DOMAIN}" for i in range(n)],
                pipeline,
                True,
            )
            for n in concurrency
        }
    finally:
        dovecot.stop()


def dovecot_available() -> bool:
    return os.path.exists("/usr/sbin/dovecot") and os.geteuid() == 0


async def main(args: argparse.Namespace) -> None:
    messages = [make_message(i, args.size) for i in range(args.messages)]
    print(
        f"POP3 retrieval: {args.messages} messages x {args.size} octets per mailbox, "
        f"STAT + UIDL + RETR each, pipeline depth {args.pipeline}, plaintext loopback"
    )
    with tempfile.TemporaryDirectory(prefix="pop3-bench-") as tmp:
        directory = Path(tmp)
        os.chmod(directory, 0o755)  # Dovecot's mail processes run as nobody
        results = {
            "mailstack": await bench_mailstack(
                directory / "mailstack", args.concurrency, messages, args.pipeline
            )
        }
        if args.dovecot and dovecot_available():
            results["dovecot"] = await bench_dovecot(
                directory / "dovecot", args.concurrency, messages, args.pipeline
            )
        elif args.dovecot:
            print("dovecot: skipped (needs /usr/sbin/dovecot and root)")
        columns = ("mailboxes", "messages", "seconds", "msg/s", "MB/s")
        print(f"{'server':<10} " + " ".join(f"{c:>9}" for c in columns))
        for name, figures in results.items():
            for n, f in figures.items():
                print(
                    f"{name:<10} {n:>9} {int(f['messages']):>9} {f['seconds']:>9.2f} "
                    f"{f['msg_s']:>9.0f} {f['mb_s']:>9.1f}"
                )
        shutil.rmtree(directory, ignore_errors=True)
    table = []
    for n, figures in results["mailstack"].items():
        peers = {
            name: round(other[n]["msg_s"]) for name, other in results.items() if name != "mailstack"
        }
        table.append(rows.row("pop3", f"RETR msg/s, {n}", round(figures["msg_s"]), peers))
    rows.write(args.json, table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--pipeline", type=int, default=1)
    parser.add_argument("--no-dovecot", dest="dovecot", action="store_false")
    parser.add_argument("--json", help="also write the result rows here (bench/rows.py)")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client:
        host, port, user, depth = arguments.client.rsplit(":", 3)
        print(json.dumps(run_client(host, int(port), user, int(depth))))
    else:
        trio.run(main, arguments)
