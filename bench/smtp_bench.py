"""SMTP delivery benchmark: mailstack's MX against aiosmtpd and Postfix, same run.

Every server gets the same load: ``--messages`` messages per run of 1 KiB and
100 KiB payload, at 1, 10 and 50 concurrent clients, one session per message
and with sessions that stay open for many messages (``--per-session``).  A message
counts once the server answered 250 to the end of DATA; for mailstack that
means committed and fsynced (group commit), for aiosmtpd the handler wrote
and fsynced it to a file, Postfix fsyncs its queue file before the 250.

All servers run at once, idle but for the one under load: each
configuration's messages are sent in ``--rounds`` interleaved shares (server
A, B, C, then C, B, A, ...), so a shift in the shared machine's load hits
every server alike.

Servers (each a separate process, started here with a private config):

- mailstack: ``mailstack serve smtp`` on a fresh data dir (SQLite), and
  mailstack-wp: the same with ``[database] writer_process = true`` (new
  messages committed by a child process; its CPU is counted as the server's).
- aiosmtpd: a handler that appends each message to a file and fsyncs it.
- trio-floor (``--servers ... trio-floor``): not a peer but a reference, a
  trio server that answers every command with a canned reply and stores
  nothing: the most any trio server can do per second on the machine.
- plain-floor (``--servers ... plain-floor``): the same canned replies on
  mailstack's own I/O path (PlainStream, one schedule point per reply): what
  the listener would cost with no SMTP core and no store, so the rest of
  mailstack-wp's figure is what parsing, checking and storing cost.
- Postfix: a private instance (own config_directory, queue_directory,
  loopback port, ``discard`` local transport) when /usr/sbin/postfix exists
  and we are root; ``--no-postfix`` skips it.

Load generators:

- throughput: Postfix's ``smtp-source`` when installed (C, far cheaper than
  any server here), else the trio generator below;
- latency (p50/p99 of the whole transaction, connect to 250 after DATA):
  the trio generator in a separate process, raw sockets, pipelining nothing,
  so the figure is what one SMTP client waits.

Server CPU per message comes from /proc/PID/stat: utime+stime of the server
process plus its reaped and live children (Postfix's master and its
daemons, mailstack's writer process).

    python bench/smtp_bench.py                  # everything, ~a few minutes
    python bench/smtp_bench.py --sizes 1024 --concurrency 50 --messages 3000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import rows  # bench/rows.py: the --json row format
import trio

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DOMAIN = "bench.test"
RECIPIENT = f"user@{DOMAIN}"
SENDER = f"sender@{DOMAIN}"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
PEERS = ("aiosmtpd", "postfix", "trio-floor", "plain-floor")


# -- servers ------------------------------------------------------------------------


def wait_port(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no SMTP server on port {port}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_cpu_seconds(pid: int, *, children: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[11..14] = utime, stime, cutime, cstime (stat fields 14-17)
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            if int(status.split("PPid:", 1)[1].split()[0]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def tree_cpu_seconds(pid: int) -> float:
    """A server's CPU: its own, its reaped children's and its live children's
    (Postfix's smtpd/cleanup, mailstack's writer process)."""
    total = proc_cpu_seconds(pid, children=True)
    for child in children_of(pid):
        try:
            total += proc_cpu_seconds(child)
        except OSError:
            continue  # ended meanwhile (its time is now in the parent's)
    return total


class Server:
    name = ""
    port = 0

    def cpu_seconds(self) -> float:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class SubprocessServer(Server):
    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
        *,
        start_seconds: float = 20.0,
    ) -> None:
        self.name = name
        self.port = port
        # stderr to a file: a pipe nobody reads would stall a chatty server.
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT
            )
        try:
            wait_port(port, start_seconds)
        except RuntimeError:
            self.process.kill()
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} did not start: {tail}") from None

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_mailstack(
    directory: Path,
    *,
    max_batch: int,
    writer_process: bool = False,
    wrapper: Sequence[str] = (),
    start_seconds: float = 20.0,
) -> SubprocessServer:
    port = free_port()
    config = directory / "mailstack.toml"
    config.write_text(
        f'hostname = "mx.{DOMAIN}"\n'
        f'data_dir = "{directory / "data"}"\n'
        f"[database]\nmax_batch = {max_batch}\n"
        f"writer_process = {str(writer_process).lower()}\n"
        f'[smtp]\nlisten = ["127.0.0.1:{port}"]\nmax_connections_per_ip = 1000\n'
        # The peer (aiosmtpd) checks no SPF/DKIM/DMARC either.
        "authentication_checks = false\n"
        '[logging]\nlevel = "warning"\n'
    )
    env = {**os.environ, "MAILSTACK_CONFIG": str(config)}
    cli = [PYTHON, "-m", "mailstack"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True, cwd=ROOT)
    subprocess.run(
        [*cli, "domain", "add", DOMAIN], env=env, check=True, capture_output=True, cwd=ROOT
    )
    subprocess.run(
        [*cli, "user", "add", RECIPIENT],
        env=env,
        check=True,
        capture_output=True,
        input=b"bench-password\n",
        cwd=ROOT,
    )
    name = "mailstack-wp" if writer_process else "mailstack"
    argv = [*wrapper, *cli, "serve", "smtp"]
    return SubprocessServer(
        name, argv, port, directory / f"{name}.log", env, start_seconds=start_seconds
    )


AIOSMTPD_SERVER = """
import asyncio, os, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

class Handler:
    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    async def handle_DATA(self, server, session, envelope):
        os.write(self.fd, envelope.original_content)
        os.fsync(self.fd)
        return "250 OK"

port, path = int(sys.argv[1]), sys.argv[2]
async def main():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: SMTP(Handler(path), hostname="aiosmtpd.bench.test",
                                   data_size_limit=50 * 1024 * 1024), "127.0.0.1", port)
    await srv.serve_forever()
asyncio.run(main())
"""


def start_aiosmtpd(
    directory: Path, *, wrapper: Sequence[str] = (), start_seconds: float = 20.0
) -> SubprocessServer:
    port = free_port()
    argv = [*wrapper, PYTHON, "-c", AIOSMTPD_SERVER, str(port), str(directory / "aiosmtpd.mbox")]
    return SubprocessServer(
        "aiosmtpd", argv, port, directory / "aiosmtpd.log", start_seconds=start_seconds
    )


# A reference, not a peer: the least a trio server can do per session here.
# It answers every command with a canned reply, parses nothing, stores
# nothing (no fsync): no real server on trio can be faster on this machine.
TRIO_FLOOR_SERVER = """
import sys, trio

REPLIES = {b"EHLO": b"250-floor\\r\\n250 PIPELINING\\r\\n", b"DATA": b"354 go\\r\\n",
           b"QUIT": b"221 bye\\r\\n"}

async def session(stream):
    await stream.send_all(b"220 floor\\r\\n")
    buffer, in_data = b"", False
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        buffer += chunk
        while True:
            if in_data:
                end = buffer.find(b"\\r\\n.\\r\\n")
                if end < 0:
                    break
                buffer, in_data = buffer[end + 5:], False
                await stream.send_all(b"250 ok\\r\\n")
                continue
            end = buffer.find(b"\\r\\n")
            if end < 0:
                break
            verb, buffer = buffer[:4].upper(), buffer[end + 2:]
            await stream.send_all(REPLIES.get(verb, b"250 ok\\r\\n"))
            in_data = verb == b"DATA"
            if verb == b"QUIT":
                return

trio.run(trio.serve_tcp, session, int(sys.argv[1]))
"""


# trio-floor's replies on mailstack's PlainStream and its reply-then-read call.
PLAIN_FLOOR_SERVER = """
import socket, sys, trio
from mailstack.plain_stream import PlainStream

REPLIES = {b"EHLO": b"250-floor\\r\\n250 PIPELINING\\r\\n", b"DATA": b"354 go\\r\\n"}

async def session(sock):
    stream = PlainStream(sock)
    out, buffer, in_data = b"220 floor\\r\\n", b"", False
    try:
        while True:
            chunk = await (stream.send_then_receive(out) if out else stream.receive_some())
            if not chunk:
                return
            out, buffer = b"", buffer + chunk
            while True:
                if in_data:
                    end = buffer.find(b"\\r\\n.\\r\\n")
                    if end < 0:
                        break
                    buffer, in_data, out = buffer[end + 5:], False, out + b"250 ok\\r\\n"
                    continue
                end = buffer.find(b"\\r\\n")
                if end < 0:
                    break
                verb, buffer = buffer[:4].upper(), buffer[end + 2:]
                if verb == b"QUIT":
                    await stream.send_all_now(out + b"221 bye\\r\\n")
                    return
                out += REPLIES.get(verb, b"250 ok\\r\\n")
                in_data = verb == b"DATA"
    finally:
        stream.close_now()

async def main(port):
    listening = socket.create_server(("127.0.0.1", port), backlog=1024)
    listening.setblocking(False)
    async with trio.open_nursery() as nursery:
        while True:
            try:
                connection, _ = listening.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listening)
                continue
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(session, connection)

trio.run(main, int(sys.argv[1]))
"""


# The reference servers that parse and store nothing, by name.
FLOOR_SERVERS = {"trio-floor": TRIO_FLOOR_SERVER, "plain-floor": PLAIN_FLOOR_SERVER}


def start_floor(
    name: str, directory: Path, *, wrapper: Sequence[str] = (), start_seconds: float = 20.0
) -> SubprocessServer:
    port = free_port()
    argv = [*wrapper, PYTHON, "-c", FLOOR_SERVERS[name], str(port)]
    return SubprocessServer(
        name, argv, port, directory / f"{name}.log", start_seconds=start_seconds
    )


class PostfixServer(Server):
    """A private Postfix instance; nothing of the system's configuration is used."""

    def __init__(self, directory: Path) -> None:
        self.name = "postfix"
        self.port = free_port()
        self.config = directory / "postfix-etc"
        queue = directory / "postfix-queue"
        data = directory / "postfix-data"
        for path in (self.config, queue, data):
            path.mkdir()
        shutil.chown(data, "postfix", "postfix")
        (self.config / "main.cf").write_text(
            "compatibility_level = 3.6\n"
            f"queue_directory = {queue}\n"
            f"data_directory = {data}\n"
            "command_directory = /usr/sbin\n"
            "daemon_directory = /usr/lib/postfix/sbin\n"
            "mail_owner = postfix\nsetgid_group = postdrop\n"
            "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n"
            f"myhostname = postfix.{DOMAIN}\nmydomain = {DOMAIN}\nmydestination = {DOMAIN}\n"
            "mynetworks = 127.0.0.0/8\n"
            "local_transport = discard:\nalias_maps =\nalias_database =\n"
            "local_recipient_maps =\nsmtpd_banner = $myhostname ESMTP\n"
            "smtpd_client_connection_count_limit = 0\nsmtpd_client_connection_rate_limit = 0\n"
            "default_process_limit = 200\n"
            f"maillog_file = {directory / 'maillog'}\nmaillog_file_prefixes = {directory}\n"
            "biff = no\nsmtputf8_enable = no\n"
        )
        master = (Path("/etc/postfix/master.cf")).read_text()
        lines = []
        for line in master.splitlines():
            if line.startswith("smtp      inet"):
                line = line.replace("smtp      inet", f"127.0.0.1:{self.port} inet", 1)
            lines.append(line)
        (self.config / "master.cf").write_text("\n".join(lines) + "\n")
        env = {**os.environ, "MAIL_CONFIG": str(self.config)}
        started = subprocess.run(
            ["/usr/sbin/postfix", "-c", str(self.config), "start"], env=env, capture_output=True
        )
        if started.returncode != 0:
            raise RuntimeError(
                f"postfix start failed: {(started.stdout + started.stderr).decode()[-1000:]}"
            )
        pid_file = queue / "pid" / "master.pid"
        deadline = time.monotonic() + 20
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.master_pid = int(pid_file.read_text().strip())
        wait_port(self.port)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.master_pid)

    def stop(self) -> None:
        subprocess.run(["/usr/sbin/postfix", "-c", str(self.config), "stop"], capture_output=True)


# -- load generators ------------------------------------------------------------------


def make_payload(size: int) -> bytes:
    header = f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: bench\r\n\r\n".encode()
    line = b"benchmark text benchmark text benchmark text benchmark text benchmark..\r\n"
    body = bytearray()
    while len(body) + len(line) <= size:
        body += line
    body += b"x" * max(0, size - len(body) - 2) + b"\r\n"
    return header + bytes(body)


async def _transaction_session(
    port: int, payload: bytes, count: int, latencies: list[float]
) -> None:
    """``count`` messages over one connection; each latency is one transaction
    (for one message per session: connect to the 250 after DATA)."""
    started = time.perf_counter()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    buffer = bytearray()

    async def reply() -> bytes:
        while True:
            end = buffer.find(b"\r\n")
            while end >= 0:
                line = bytes(buffer[: end + 2])
                del buffer[: end + 2]
                if line[3:4] == b" ":
                    if line[:1] not in (b"2", b"3"):
                        raise RuntimeError(f"server said {line!r}")
                    return line
                end = buffer.find(b"\r\n")
            data = await stream.receive_some(65536)
            if not data:
                raise RuntimeError("server closed the connection")
            buffer.extend(data)

    async with stream:
        await reply()
        await stream.send_all(b"EHLO client.bench.test\r\n")
        await reply()
        for _ in range(count):
            await stream.send_all(f"MAIL FROM:<{SENDER}>\r\n".encode())
            await reply()
            await stream.send_all(f"RCPT TO:<{RECIPIENT}>\r\n".encode())
            await reply()
            await stream.send_all(b"DATA\r\n")
            await reply()
            await stream.send_all(payload + b".\r\n")
            await reply()
            now = time.perf_counter()
            latencies.append(now - started)
            started = now
        await stream.send_all(b"QUIT\r\n")
        await reply()


async def trio_load(
    port: int, size: int, concurrency: int, messages: int, per_session: int
) -> list[float]:
    payload = make_payload(size)
    latencies: list[float] = []
    sessions = messages // per_session
    limiter = trio.Semaphore(concurrency)

    async def one() -> None:
        async with limiter:
            await _transaction_session(port, payload, per_session, latencies)

    async with trio.open_nursery() as nursery:
        for _ in range(sessions):
            nursery.start_soon(one)
    return latencies


def run_trio_generator(
    port: int, size: int, concurrency: int, messages: int, per_session: int
) -> tuple[float, list[float]]:
    """The trio generator in a separate process (its CPU is not the server's)."""
    argv = [
        PYTHON,
        __file__,
        "--generate",
        str(port),
        str(size),
        str(concurrency),
        str(messages),
        str(per_session),
    ]
    started = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    data = json.loads(out.stdout)
    return data["elapsed"] or elapsed, data["latencies"]


def run_smtp_source(
    port: int, size: int, concurrency: int, messages: int, per_session: int
) -> float:
    argv = [SMTP_SOURCE, "-s", str(concurrency), "-m", str(messages), "-l", str(size)]
    if per_session > 1:
        argv.append("-d")
    argv += ["-f", SENDER, "-t", RECIPIENT, "-M", "client.bench.test", f"127.0.0.1:{port}"]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {result.stderr.decode()[-500:]}")
    return elapsed


@dataclass
class Result:
    server: str
    size: int
    concurrency: int
    messages: int
    per_session: int
    generator: str
    per_second: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_ms_per_message: float


def warm_up(server: Server, args: argparse.Namespace) -> None:
    """A few hundred messages before the first measurement, for every server
    alike: Postfix forks its daemons, mailstack starts its writer process and
    fills its recipient cache, every Python server finishes its imports."""
    if Path(SMTP_SOURCE).exists() and not args.trio_only:
        run_smtp_source(server.port, 1024, 10, 300, 1)
    else:
        run_trio_generator(server.port, 1024, 10, 300, 1)
    time.sleep(1.0)


def messages_for(size: int, concurrency: int, per_session: int, args: argparse.Namespace) -> int:
    messages = args.messages if size <= 4096 else max(concurrency * 4, args.messages // 4)
    # Whole sessions only, in every round: each session sends per_session messages.
    unit = per_session * concurrency * args.rounds
    return max(unit, messages - messages % unit)


def throughput_chunk(
    server: Server, size: int, concurrency: int, per_session: int, messages: int, use_source: bool
) -> tuple[float, float]:
    """(seconds, server CPU seconds) for ``messages`` messages."""
    cpu_before = server.cpu_seconds()
    if use_source:
        elapsed = run_smtp_source(server.port, size, concurrency, messages, per_session)
    else:
        elapsed, _ = run_trio_generator(server.port, size, concurrency, messages, per_session)
    return elapsed, server.cpu_seconds() - cpu_before


def measure_all(
    servers: list[Server], size: int, concurrency: int, per_session: int, args: argparse.Namespace
) -> list[Result]:
    """One configuration on every server, interleaved: ``--rounds`` rounds,
    each giving every server a share of the messages in turn (the order
    reversed every other round), so a change in the shared machine's load
    falls on all servers alike instead of on whichever ran at that minute."""
    messages = messages_for(size, concurrency, per_session, args)
    chunk = messages // args.rounds
    use_source = Path(SMTP_SOURCE).exists() and not args.trio_only
    elapsed = dict.fromkeys((s.name for s in servers), 0.0)
    cpu = dict.fromkeys((s.name for s in servers), 0.0)
    for round_number in range(args.rounds):
        order = servers if round_number % 2 == 0 else servers[::-1]
        for server in order:
            seconds, cpu_seconds = throughput_chunk(
                server, size, concurrency, per_session, chunk, use_source
            )
            elapsed[server.name] += seconds
            cpu[server.name] += cpu_seconds
    results = []
    for server in servers:
        # Latency: a shorter run with the timing generator at the same concurrency.
        lat_messages = max(concurrency * per_session * 2, messages // 4)
        lat_messages -= lat_messages % per_session
        _, latencies = run_trio_generator(server.port, size, concurrency, lat_messages, per_session)
        latencies.sort()
        results.append(
            Result(
                server=server.name,
                size=size,
                concurrency=concurrency,
                messages=messages,
                per_session=per_session,
                generator="smtp-source" if use_source else "trio",
                per_second=messages / elapsed[server.name],
                p50_ms=statistics.median(latencies) * 1000 if latencies else None,
                p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else None,
                cpu_ms_per_message=cpu[server.name] / messages * 1000,
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 102400])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument(
        "--messages", type=int, default=2000, help="per 1 KiB run (100 KiB: a quarter)"
    )
    parser.add_argument(
        "--per-session",
        type=int,
        nargs="+",
        default=[1, 20],
        help="messages per session; above 1 sessions stay open (smtp-source -d)",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["mailstack", "mailstack-wp", "aiosmtpd", "postfix"],
        help="mailstack-wp: mailstack with [database] writer_process = true;"
        " trio-floor and plain-floor (not by default): trio servers that parse and"
        " store nothing (plain-floor on mailstack's PlainStream)",
    )
    parser.add_argument("--max-batch", type=int, default=64, help="mailstack group-commit batch")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="each configuration's messages in this many interleaved shares per server",
    )
    parser.add_argument("--trio-only", action="store_true", help="do not use smtp-source")
    parser.add_argument("--json", type=Path, help="also write the result rows here (bench/rows.py)")
    parser.add_argument("--generate", nargs=5, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        port, size, concurrency, messages, per_session = args.generate
        started = time.perf_counter()
        latencies = trio.run(trio_load, port, size, concurrency, messages, per_session)
        print(json.dumps({"elapsed": time.perf_counter() - started, "latencies": latencies}))
        return

    starters: dict[str, Callable[[Path], Server]] = {
        "mailstack": lambda d: start_mailstack(d, max_batch=args.max_batch),
        "mailstack-wp": lambda d: start_mailstack(d, max_batch=args.max_batch, writer_process=True),
        "aiosmtpd": start_aiosmtpd,
        "postfix": PostfixServer,
        "trio-floor": partial(start_floor, "trio-floor"),
        "plain-floor": partial(start_floor, "plain-floor"),
    }
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        servers: list[Server] = []
        for name in args.servers:
            if name == "postfix" and (not Path("/usr/sbin/postfix").exists() or os.geteuid() != 0):
                print("postfix: skipped (not installed or not root)", file=sys.stderr)
                continue
            directory = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix=f"smtp-bench-{name}-"))
            )
            if name == "postfix":
                os.chmod(directory, 0o755)
            server = starters[name](directory)
            stack.callback(server.stop)
            servers.append(server)
        for server in servers:
            warm_up(server, args)
        for size in args.sizes:
            for concurrency in args.concurrency:
                for per_session in args.per_session:
                    for result in measure_all(servers, size, concurrency, per_session, args):
                        results.append(result)
                        print(describe(result), flush=True)
    print_ratios(results)
    rows.write(args.json, result_rows(results))


def result_rows(results: list[Result]) -> list[rows.Row]:
    """Throughput and p99 per (size, concurrency, mode): mailstack beside each peer."""
    table: list[rows.Row] = []
    keys = dict.fromkeys((r.size, r.concurrency, r.per_session) for r in results)
    for size, concurrency, per_session in keys:
        same = [
            r
            for r in results
            if (r.size, r.concurrency, r.per_session) == (size, concurrency, per_session)
        ]
        label = f"{size} B, {concurrency} clients, {per_session}/session"
        for metric, field, better in (
            ("msg/s", "per_second", "higher"),
            ("p99 ms", "p99_ms", "lower"),
        ):
            values = {r.server: getattr(r, field) for r in same}
            peers = {k: round(v, 1) if v else v for k, v in values.items() if k in PEERS}
            for variant, ours in values.items():
                if variant in PEERS:
                    continue
                suffix = " (writer_process)" if variant == "mailstack-wp" else ""
                table.append(
                    rows.row(
                        "smtp",
                        f"{metric}, {label}{suffix}",
                        round(ours, 1) if ours else ours,
                        peers,
                        better=better,
                    )
                )
    return table


def _mode(r: Result) -> str:
    return "1/session   " if r.per_session == 1 else f"{r.per_session:>3d}+/session"


def describe(r: Result) -> str:
    return (
        f"{r.server:12s} {r.size:>7d} B  c={r.concurrency:<3d} {_mode(r)}"
        f" {r.per_second:8.0f} msg/s"
        f"  p50 {r.p50_ms or 0:7.1f} ms  p99 {r.p99_ms or 0:7.1f} ms"
        f"  cpu {r.cpu_ms_per_message:6.2f} ms/msg  ({r.generator})"
    )


def print_ratios(results: list[Result]) -> None:
    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:5.2f}" if a and b else "  n/a"

    for variant in dict.fromkeys(r.server for r in results if r.server not in PEERS):
        ours = {(r.size, r.concurrency, r.per_session): r for r in results if r.server == variant}
        print(
            f"\n{variant} relative to the peers (throughput x, p50/p99 latency x, CPU/message x):"
        )
        for r in results:
            key = (r.size, r.concurrency, r.per_session)
            if r.server not in PEERS or key not in ours:
                continue
            m = ours[key]
            print(
                f"  vs {r.server:9s} {r.size:>7d} B c={r.concurrency:<3d} {_mode(r)}"
                f" throughput {ratio(m.per_second, r.per_second)}"
                f"  p50 {ratio(m.p50_ms, r.p50_ms)}  p99 {ratio(m.p99_ms, r.p99_ms)}"
                f"  cpu/msg {ratio(m.cpu_ms_per_message, r.cpu_ms_per_message)}"
            )


if __name__ == "__main__":
    main()
