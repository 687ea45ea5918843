"""IMAP benchmark: mailstack against Dovecot, same run, same mail.

One account holds ``--messages`` messages (default 10,000).  For each
concurrency level (default 10 and 50) every client is a separate process
talking plain TCP on loopback (TLS cost is the same for both servers and
would only blur the comparison) and measures, in order:

* ``login_select``: connect + LOGIN + SELECT INBOX + LOGOUT, ``--logins`` times;
* ``fetch_all``: one ``FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)``;
* ``uid_fetch_bodies``: ``UID FETCH <uid> BODY.PEEK[]`` for ``--bodies`` messages;
* ``search``: ``--searches`` times ``SEARCH SUBJECT "<word>"`` (header search)
  and ``SEARCH BODY "<word>"`` (full text).

All clients run each phase together (they wait for a "go" from the
orchestrator), and a phase's rate is all clients' operations divided by the
time until the last client finished it.  Then ``--idle`` connections (default
1,000) log in, SELECT and IDLE from one client process, and the server's
resident memory growth divided by the number of connections is reported
(mailstack: the RSS of a fresh server process; Dovecot: the sum of all its
processes' RSS).

Last, the ``resync`` scenario (RFC 7162 QRESYNC, a phone reconnecting): a
client notes UIDVALIDITY and HIGHESTMODSEQ, another session changes the
flags of 7 messages and expunges 3, and the client reconnects with
``SELECT INBOX (QRESYNC (uidvalidity modseq))`` ``--resync-rounds`` times.
Reported: the octets of that SELECT's responses and its time from command
to tagged OK on loopback (an upper bound on the server's time), median and
worst.  ``--resync-only`` runs just this scenario.

    python bench/imap_bench.py
    python bench/imap_bench.py --messages 2000 --concurrency 10 --idle 200 --no-dovecot
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import resource
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
from mailstack.config import AuthConfig, Config, Endpoint, ImapConfig
from mailstack.imap import server
from mailstack.net import Bound
from mailstack.service import ServiceContext
from mailstack.store import migrate
from mailstack.store.store import Store
from mailstack.tls import TlsProvider

USER = "user@bench.test"
PASSWORD = "bench-password"
WORDS = ("apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel")


def make_message(index: int) -> bytes:
    """A realistic small message (~1.5 KB): a few addresses, a MIME text body."""
    word = WORDS[index % len(WORDS)]
    body = (f"Hello,\r\n\r\nthis is message {index} about {word}s.\r\n" * 20).encode()
    return (
        f'From: "Sender {index % 97}" <sender{index % 97}@example.org>\r\n'
        f"To: {USER}, Other Person <other@example.org>\r\n"
        f"Cc: list@example.org\r\n"
        f"Subject: bench message {index} {word}\r\n"
        f"Date: Mon, 2 Mar 2026 09:{index % 60:02d}:00 +0000\r\n"
        f"Message-ID: <{index}.bench@example.org>\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode() + body


# -- the client -----------------------------------------------------------------


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=600)
        self.buffer = bytearray()
        self.tag = 0
        self.line()  # greeting

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    def line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[: end + 2])
                del self.buffer[: end + 2]
                return line
            self._fill()

    def exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def command(self, text: str) -> int:
        """Send, read to the tagged reply; the number of untagged responses."""
        self.tag += 1
        tag = f"b{self.tag}".encode()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        count = 0
        while True:
            line = self.line()
            while line.endswith(b"}\r\n"):
                size = int(line[line.rindex(b"{") + 1 : -3])
                self.exact(size)
                line = self.line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return count
            count += 1

    def measured(self, text: str) -> tuple[list[bytes], float]:
        """Send, read to the tagged OK; (response lines, seconds to the tagged reply)."""
        self.tag += 1
        tag = f"b{self.tag}".encode()
        start = time.perf_counter()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                took = time.perf_counter() - start
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return lines, took

    def close(self) -> None:
        self.sock.close()


def resync_scenario(host: str, port: int, rounds: int) -> dict[str, float]:
    """A phone's QRESYNC reconnect after 10 messages changed (7 flag changes,
    3 expunges) in a large mailbox: octets and time of the resync SELECT."""
    phone = Conn(host, port)
    phone.command(f'LOGIN {USER} "{PASSWORD}"')
    phone.command("ENABLE QRESYNC")
    lines, _ = phone.measured("SELECT INBOX")
    codes = dict(re.findall(rb"\[(UIDVALIDITY|HIGHESTMODSEQ) (\d+)\]", b"".join(lines)))
    uidvalidity, modseq = int(codes[b"UIDVALIDITY"]), int(codes[b"HIGHESTMODSEQ"])
    phone.command("LOGOUT")
    phone.close()
    other = Conn(host, port)
    other.command(f'LOGIN {USER} "{PASSWORD}"')
    other.command("SELECT INBOX")
    other.command("UID STORE 11,222,1333,2444,3555,4666,5777 +FLAGS (\\Seen $Label1)")
    other.command("UID STORE 100,5000,9000 +FLAGS (\\Deleted)")
    other.command("UID EXPUNGE 100,5000,9000")
    other.command("LOGOUT")
    other.close()
    octets: list[int] = []
    seconds: list[float] = []
    phone = Conn(host, port)
    phone.command(f'LOGIN {USER} "{PASSWORD}"')
    phone.command("ENABLE QRESYNC")
    for _ in range(rounds):
        lines, took = phone.measured(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))")
        octets.append(sum(len(line) for line in lines))
        seconds.append(took)
        changed = sum(1 for line in lines if b" FETCH " in line or b"VANISHED" in line)
        if changed != 8:  # 7 FETCH lines and one VANISHED (EARLIER) line
            raise RuntimeError(f"unexpected resync answer: {lines!r}")
        phone.command("UNSELECT")
    phone.command("LOGOUT")
    phone.close()
    seconds.sort()
    return {
        "rounds": rounds,
        "octets": octets[-1],
        "ms_median": round(1000 * seconds[len(seconds) // 2], 2),
        "ms_max": round(1000 * seconds[-1], 2),
    }


PHASES = ("login_select", "fetch_all", "uid_fetch_bodies", "search_header", "search_body")


def run_client(host: str, port: int, logins: int, bodies: int, searches: int) -> None:
    """Run each phase when the orchestrator says "go" on stdin (so all clients
    run the same phase together) and report its time as a JSON line."""
    conn = Conn(host, port)
    conn.command(f'LOGIN {USER} "{PASSWORD}"')
    conn.command("SELECT INBOX")
    fetched = 0

    def login_select() -> None:
        for _ in range(logins):
            other = Conn(host, port)
            other.command(f'LOGIN {USER} "{PASSWORD}"')
            other.command("SELECT INBOX")
            other.command("LOGOUT")
            other.close()

    def fetch_all() -> None:
        nonlocal fetched
        fetched = conn.command("FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)")

    def uid_fetch_bodies() -> None:
        for n in range(1, bodies + 1):
            conn.command(f"UID FETCH {n * 37 % max(fetched, 1) + 1} BODY.PEEK[]")

    def search_header() -> None:
        for n in range(searches):
            conn.command(f'SEARCH SUBJECT "{WORDS[n % len(WORDS)]}"')

    def search_body() -> None:
        for n in range(searches):
            conn.command(f'SEARCH BODY "{WORDS[n % len(WORDS)]}s"')

    print("ready", flush=True)
    steps = [login_select, fetch_all, uid_fetch_bodies, search_header, search_body]
    for name, step in zip(PHASES, steps, strict=True):
        sys.stdin.readline()
        t = time.perf_counter()
        step()
        print(json.dumps({"phase": name, "seconds": time.perf_counter() - t, "n": fetched}))
        sys.stdout.flush()
    conn.command("LOGOUT")
    conn.close()


def run_idlers(host: str, port: int, count: int) -> None:
    """Open ``count`` IDLE sessions, print "ready", hold them until stdin closes."""
    conns = []
    for _ in range(count):
        conn = Conn(host, port)
        conn.command(f'LOGIN {USER} "{PASSWORD}"')
        conn.command("SELECT INBOX")
        conn.sock.sendall(b"i IDLE\r\n")
        if not conn.line().startswith(b"+"):
            raise RuntimeError("IDLE refused")
        conns.append(conn)
    print("ready", flush=True)
    sys.stdin.read()
    for conn in conns:
        conn.close()


# -- orchestration ---------------------------------------------------------------


async def run_clients(host: str, port: int, n: int, args: argparse.Namespace) -> dict[str, float]:
    """n client processes; each phase starts in all of them at once and its
    rate is all clients' operations over the time until the last one finished."""
    spec = f"{host}:{port}:{args.logins}:{args.bodies}:{args.searches}"
    procs = [
        await trio.lowlevel.open_process(
            [sys.executable, __file__, "--client", spec],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(n)
    ]
    readers = [LineReader(proc) for proc in procs]
    ops = {
        "login_select": args.logins,
        "fetch_all": 1,
        "uid_fetch_bodies": args.bodies,
        "search_header": args.searches,
        "search_body": args.searches,
    }
    out: dict[str, float] = {"clients": n}
    try:
        for reader in readers:  # started and logged in: the timing starts now
            await reader.line()
        for phase in PHASES:
            start = time.perf_counter()
            reports: list[dict[str, float]] = []
            async with trio.open_nursery() as nursery:
                for reader in readers:
                    nursery.start_soon(reader.run_phase, reports)
            span = time.perf_counter() - start
            out[f"{phase}_per_s"] = round(n * ops[phase] / span, 1)
            if phase == "fetch_all":
                out["fetch_all_seconds_max"] = round(max(r["seconds"] for r in reports), 3)
                out["fetch_all_seconds_min"] = round(min(r["seconds"] for r in reports), 3)
                out["messages_per_fetch"] = reports[0]["n"]
    finally:
        for proc in procs:
            assert proc.stdin is not None
            await proc.stdin.aclose()
        for proc in procs:
            await proc.wait()
    return out


class LineReader:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.buffer = b""

    async def run_phase(self, reports: list[dict[str, float]]) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(b"go\n")
        reports.append(json.loads(await self.line()))

    async def line(self) -> bytes:
        assert self.proc.stdout is not None
        while b"\n" not in self.buffer:
            chunk = await self.proc.stdout.receive_some(65536)
            if not chunk:
                raise RuntimeError("bench client died")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


async def measure_idle(
    host: str, port: int, count: int, pids: list[int] | None
) -> dict[str, float]:
    def server_rss() -> int:
        return rss_kib(pids if pids is not None else dovecot_pids())

    before = server_rss()
    proc = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--idlers", f"{host}:{port}:{count}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    with trio.fail_after(600):
        data = b""
        while b"ready" not in data:
            chunk = await proc.stdout.receive_some(100)
            if not chunk:
                raise RuntimeError("idle client died")
            data += chunk
    await trio.sleep(1)
    after = server_rss()
    await proc.stdin.aclose()
    await proc.wait()
    return {
        "connections": count,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / count, 1),
    }


def mailstack_config(directory: Path) -> Config:
    return Config(
        hostname="bench.test",
        data_dir=str(directory / "data"),
        auth=AuthConfig(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1),
        imap=ImapConfig(
            listen=(Endpoint("127.0.0.1", 0),),
            allow_plaintext_login=True,
            max_connections=100_000,
            max_connections_per_ip=0,
            max_connections_per_account=100_000,
        ),
    )


async def prepare_mailstack(directory: Path, messages: int) -> None:
    config = mailstack_config(directory)
    config.data_path.mkdir(parents=True)
    await trio.to_thread.run_sync(migrate.upgrade, config.database_url)
    store = await Store.open(config)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.add_domain("bench.test")
            account = await store.add_account(USER, PasswordHasher(config.auth).hash(PASSWORD))
            send, receive = trio.open_memory_channel[bytes](0)

            async def deliverer() -> None:
                async for raw in receive:
                    await store.deliver([account.id], raw)

            async with trio.open_nursery() as senders:
                for _ in range(32):  # concurrent deliveries share group commits
                    senders.start_soon(deliverer)
                async with send:
                    for index in range(messages):
                        await send.send(make_message(index))
            nursery.cancel_scope.cancel()
    finally:
        await store.aclose()


async def serve_mailstack(directory: Path) -> None:
    """The server alone in this process (``--serve``): prints its port, serves
    until stdin closes, so its resident memory is the server's only."""
    config = mailstack_config(directory)
    store = await Store.open(config)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)  # what service.run starts for its services
            ctx = ServiceContext(config, store, Authenticator(config, store), TlsProvider(config))
            bound: list[Bound] = await nursery.start(server.serve, ctx)
            print(f"port {bound[0].port}", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()
    finally:
        await store.aclose()


class ServerProcess:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: trio.Process | None = None
        self.port = 0

    async def __aenter__(self) -> ServerProcess:
        self.process = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--serve", str(self.directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        data = b""
        with trio.fail_after(60):
            while b"\n" not in data:
                chunk = await self.process.stdout.receive_some(100)
                if not chunk:
                    raise RuntimeError("mailstack server did not start")
                data += chunk
        self.port = int(data.split()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None and self.process.stdin is not None
        await self.process.stdin.aclose()
        with trio.move_on_after(20):
            await self.process.wait()
        self.process.kill()


async def bench_mailstack(directory: Path, args: argparse.Namespace) -> dict[str, object]:
    t = time.perf_counter()
    await prepare_mailstack(directory, args.messages)
    took = time.perf_counter() - t
    print(f"mailstack: {args.messages} messages stored in {took:.1f} s", flush=True)
    figures: dict[str, object] = {}
    if not args.resync_only:
        async with ServerProcess(directory) as srv:
            await run_clients("127.0.0.1", srv.port, 1, args)  # warm-up
            for n in args.concurrency:
                figures[f"clients_{n}"] = await run_clients("127.0.0.1", srv.port, n, args)
                print(f"mailstack {n} clients: {figures[f'clients_{n}']}", flush=True)
    if args.idle and not args.resync_only:
        # A fresh server process, so earlier phases' heap does not hide the growth.
        async with ServerProcess(directory) as srv:
            assert srv.process is not None
            pid = srv.process.pid
            figures["idle"] = await measure_idle("127.0.0.1", srv.port, args.idle, [pid])
            print(f"mailstack idle: {figures['idle']}", flush=True)
    if args.resync_rounds:
        async with ServerProcess(directory) as srv:
            figures["resync"] = await trio.to_thread.run_sync(
                resync_scenario, "127.0.0.1", srv.port, args.resync_rounds
            )
            print(f"mailstack resync: {figures['resync']}", flush=True)
    return figures


# -- Dovecot ----------------------------------------------------------------------


@dataclass
class Dovecot:
    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    def config_text(self, owner: pwd.struct_passwd, connections: int) -> str:
        d = self.directory
        return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = {owner.pw_uid}
mail_location = maildir:{d}/mail/%n
default_process_limit = {connections + 100}
protocol imap {{
  mail_max_userip_connections = {connections * 2 + 100}
}}
default_client_limit = {connections * 2 + 100}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={d}/home/%n
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = {connections + 100}
}}
service auth {{
  client_limit = {connections * 3 + 100}
}}
service anvil {{
  client_limit = {connections * 3 + 100}
}}
"""

    def prepare(self, messages: int, connections: int) -> None:
        owner = pwd.getpwnam("nobody")
        d = self.directory
        for sub in ("run", "state"):
            (d / sub).mkdir(parents=True)
        # Dovecot's auth process (user dovecot) must reach the passwd file.
        for path in (d.parent, d):
            path.chmod(0o755)
        (d / "dovecot.conf").write_text(self.config_text(owner, connections))
        (d / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        local = USER.split("@")[0]  # %n in mail_location
        maildir = d / "mail" / local
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for index in range(messages):
            raw = make_message(index)
            lf = raw.replace(b"\r\n", b"\n")
            name = f"{1700000000 + index}.M{index}P1.bench,S={len(lf)},W={len(raw)}:2,"
            (maildir / "cur" / name).write_bytes(lf)
        (d / "home" / local).mkdir(parents=True)
        for path in [d / "mail", d / "home", *(d / "mail").rglob("*"), *(d / "home").rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def start(self) -> None:
        config = str(self.directory / "dovecot.conf")
        self.process = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", config])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"dovecot did not start; see {self.directory}/dovecot.log")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)


DOVECOT_MASTER: list[int] = []


def dovecot_pids() -> list[int]:
    """The private Dovecot's master and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    pids, todo = [], list(DOVECOT_MASTER)
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children.get(pid, [])
    return pids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def bench_dovecot(directory: Path, args: argparse.Namespace) -> dict[str, object]:
    dovecot = Dovecot(directory, free_port())
    dovecot.prepare(args.messages, max(args.idle, max(args.concurrency)))
    dovecot.start()
    assert dovecot.process is not None
    DOVECOT_MASTER[:] = [dovecot.process.pid]
    figures: dict[str, object] = {}
    try:
        if not args.resync_only:
            await run_clients("127.0.0.1", dovecot.port, 1, args)  # builds its index
            for n in args.concurrency:
                figures[f"clients_{n}"] = await run_clients("127.0.0.1", dovecot.port, n, args)
                print(f"dovecot {n} clients: {figures[f'clients_{n}']}", flush=True)
        if args.idle and not args.resync_only:
            figures["idle"] = await measure_idle("127.0.0.1", dovecot.port, args.idle, None)
            print(f"dovecot idle: {figures['idle']}", flush=True)
        if args.resync_rounds:
            figures["resync"] = await trio.to_thread.run_sync(
                resync_scenario, "127.0.0.1", dovecot.port, args.resync_rounds
            )
            print(f"dovecot resync: {figures['resync']}", flush=True)
    finally:
        dovecot.stop()
    return figures


def dovecot_available() -> bool:
    return os.path.exists("/usr/sbin/dovecot") and os.geteuid() == 0


async def main(args: argparse.Namespace) -> None:
    # 1,000 idle connections need more descriptors than the default 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    directory = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    results: dict[str, object] = {"messages": args.messages}
    try:
        if args.mailstack:
            results["mailstack"] = await bench_mailstack(directory / "mailstack", args)
        if args.dovecot and dovecot_available():
            results["dovecot"] = await bench_dovecot(directory / "dovecot", args)
        elif args.dovecot:
            print("dovecot: skipped (needs /usr/sbin/dovecot and root)")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(results, indent=2))
    rows.write(args.json, result_rows(results))


def result_rows(results: dict[str, object]) -> list[rows.Row]:
    ours = results.get("mailstack")
    theirs = results.get("dovecot")
    assert isinstance(ours, dict)
    table = []
    for key, figures in ours.items():
        peer = theirs.get(key, {}) if isinstance(theirs, dict) else {}
        if key == "idle":
            table.append(
                rows.row(
                    "imap",
                    f"KiB per IDLE connection ({figures['connections']})",
                    figures["kib_per_connection"],
                    {"dovecot": peer.get("kib_per_connection")} if peer else {},
                    better="lower",
                )
            )
            continue
        if key == "resync":
            for metric, label in (("octets", "octets"), ("ms_median", "ms (median)")):
                table.append(
                    rows.row(
                        "imap",
                        f"QRESYNC resync after 10 changes, {label}",
                        figures[metric],
                        {"dovecot": peer.get(metric)} if peer else {},
                        better="lower",
                    )
                )
            continue
        if not key.startswith("clients_"):
            continue
        for phase in PHASES:
            metric = f"{phase}_per_s"
            table.append(
                rows.row(
                    "imap",
                    f"{phase} per s, {figures['clients']} clients",
                    figures[metric],
                    {"dovecot": peer.get(metric)} if peer else {},
                )
            )
    return table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--logins", type=int, default=5, help="LOGIN+SELECT rounds per client")
    parser.add_argument("--bodies", type=int, default=50, help="UID FETCH bodies per client")
    parser.add_argument("--searches", type=int, default=2, help="searches of each kind per client")
    parser.add_argument("--idle", type=int, default=1000, help="IDLE connections (0: skip)")
    parser.add_argument("--resync-rounds", type=int, default=20, help="QRESYNC SELECTs (0: skip)")
    parser.add_argument("--resync-only", action="store_true", help="only the resync scenario")
    parser.add_argument("--no-dovecot", dest="dovecot", action="store_false")
    parser.add_argument("--no-mailstack", dest="mailstack", action="store_false")
    parser.add_argument("--json", help="also write the result rows here (bench/rows.py)")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--idlers", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client:
        host, port, logins, bodies, searches = arguments.client.split(":")
        run_client(host, int(port), int(logins), int(bodies), int(searches))
    elif arguments.serve:
        trio.run(serve_mailstack, Path(arguments.serve))
    elif arguments.idlers:
        host, port, count = arguments.idlers.split(":")
        run_idlers(host, int(port), int(count))
    else:
        trio.run(main, arguments)
