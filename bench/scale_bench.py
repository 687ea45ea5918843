"""Connection scale: one ``mailstack serve`` process holding 10,000
authenticated IMAP IDLE sessions and 1,000 SMTP sessions on loopback.

    python bench/scale_bench.py [--imap 10000] [--smtp 1000] [--json FILE]

The server runs as ``mailstack serve`` (so its start-up raises RLIMIT_NOFILE to
the hard limit, as in production); the load comes from several generator
processes, each from its own loopback source address (127.0.0.2, ...) so no
address runs out of ephemeral ports.  Once every session is open the bench
measures the server's resident memory per IDLE connection and how long a new
client takes to be served: IMAP LOGIN + SELECT, and an SMTP delivery.  With
Dovecot installed (``apt-get install dovecot-imapd``) and root, Dovecot's
memory per IDLE connection is measured beside it (bench/imap_bench.py's
private Dovecot, 1,000 connections: it runs one process per session).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imap_bench
import rows

USER = "user@scale.test"
PASSWORD = "scale-password"
# Connections opened at once per generator (bounds the login burst).
OPEN_AT_ONCE = 200

CONFIG = """\
hostname = "scale.test"
data_dir = "{data}"
[auth]
argon2_time_cost = 1
argon2_memory_kib = 1024
argon2_parallelism = 1
[smtp]
listen = ["127.0.0.1:0"]
max_connections = {smtp_limit}
max_connections_per_ip = 0
command_timeout_seconds = 3600.0
[imap]
listen = ["127.0.0.1:0"]
allow_plaintext_login = true
max_connections = {imap_limit}
max_connections_per_ip = 0
max_connections_per_account = 0
[logging]
level = "warning"
"""


# -- load generator (child process) ---------------------------------------------------


async def _line(stream: trio.SocketStream, buf: bytearray, marker: bytes) -> None:
    """Read up to ``marker``; a refusal (NO, BAD, 4xx/5xx) stops the bench."""
    while marker not in buf:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise RuntimeError(f"server closed the connection: {bytes(buf)!r}")
        buf += chunk
        if any(word in buf for word in (b"a NO", b"BAD", b"\r\n4", b"\r\n5", b"* BYE")):
            raise RuntimeError(f"refused: {bytes(buf)!r}")
    buf.clear()


async def _connect(source: str, port: int) -> trio.SocketStream:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def _idler(source: str, port: int, held: list[trio.SocketStream]) -> None:
    stream = await _connect(source, port)
    buf = bytearray()
    await _line(stream, buf, b"\r\n")
    await stream.send_all(f'a LOGIN {USER} "{PASSWORD}"\r\n'.encode())
    await _line(stream, buf, b"a OK")
    await stream.send_all(b"b SELECT INBOX\r\nc IDLE\r\n")
    await _line(stream, buf, b"+ ")
    held.append(stream)


async def _smtp_session(source: str, port: int, held: list[trio.SocketStream]) -> None:
    stream = await _connect(source, port)
    buf = bytearray()
    await _line(stream, buf, b"220 ")
    await stream.send_all(b"EHLO scale-client.test\r\n")
    await _line(stream, buf, b"250 ")
    held.append(stream)


async def generate(kind: str, source: str, port: int, count: int) -> None:
    """Open ``count`` sessions, print "ready", hold them until stdin closes."""
    held: list[trio.SocketStream] = []
    opener = _idler if kind == "imap" else _smtp_session
    limiter = trio.CapacityLimiter(OPEN_AT_ONCE)

    async def one() -> None:
        async with limiter:
            await opener(source, port, held)

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    print("ready", flush=True)
    await trio.to_thread.run_sync(sys.stdin.read)


# -- orchestration --------------------------------------------------------------------


def mailstack(config: Path, *args: str, stdin: str = "") -> None:
    subprocess.run(
        [sys.executable, "-m", "mailstack", "--config", str(config), *args],
        input=stdin.encode(),
        check=True,
        capture_output=True,
    )


class Generators:
    """Child processes of :func:`generate`, each on its own source address."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ready = 0  # processes[:ready] have reported
        self.next_address = 2

    def start(self, kind: str, port: int, total: int, per_process: int) -> None:
        while total > 0:
            count = min(total, per_process)
            source = f"127.0.0.{self.next_address}"
            self.next_address += 1
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--generate", f"{kind}:{source}:{port}:{count}"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            )
            total -= count

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for process in self.processes[self.ready :]:
            assert process.stdout is not None
            line = process.stdout.readline()
            if b"ready" not in line or time.monotonic() > deadline:
                raise RuntimeError("a load generator failed (see its stderr)")
        self.ready = len(self.processes)

    def stop(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in self.processes:
            process.wait(timeout=60)


def new_client_seconds(imap_port: int, smtp_port: int) -> tuple[float, float]:
    import imaplib

    started = time.perf_counter()
    client = imaplib.IMAP4("127.0.0.1", imap_port, timeout=30)
    client.login(USER, PASSWORD)
    client.select("INBOX")
    imap_seconds = time.perf_counter() - started
    client.logout()
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
        smtp.sendmail("probe@elsewhere.test", [USER], b"Subject: probe\r\n\r\nhello\r\n")
    return imap_seconds, time.perf_counter() - started


def bench_mailstack(directory: Path, args: argparse.Namespace) -> dict[str, float]:
    directory.mkdir(parents=True)
    config = directory / "mailstack.toml"
    config.write_text(
        CONFIG.format(
            data=directory / "data", smtp_limit=args.smtp + 100, imap_limit=args.imap + 100
        )
    )
    mailstack(config, "db", "upgrade")
    mailstack(config, "domain", "add", "scale.test")
    mailstack(config, "user", "add", USER, stdin=PASSWORD + "\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "mailstack", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
    )
    generators = Generators()
    try:
        assert server.stdout is not None
        ports: dict[str, int] = {}
        while len(ports) < 2:
            words = server.stdout.readline().decode().split()
            if not words:
                raise RuntimeError("mailstack serve did not start")
            ports[words[1]] = int(words[2].rsplit(":", 1)[1])
        time.sleep(1)
        before = imap_bench.rss_kib([server.pid])
        pss_before = pss_kib([server.pid])
        started = time.perf_counter()
        generators.start("imap", ports["imap"], args.imap, args.per_process)
        generators.wait_ready(600)
        imap_open = time.perf_counter() - started
        after_imap = imap_bench.rss_kib([server.pid])
        pss_after_imap = pss_kib([server.pid])
        generators.start("smtp", ports["smtp"], args.smtp, args.per_process)
        generators.wait_ready(600)
        time.sleep(1)
        after_all = imap_bench.rss_kib([server.pid])
        imap_seconds, smtp_seconds = new_client_seconds(ports["imap"], ports["smtp"])
        soft_limit = open_files_limit(server.pid)
        return {
            "imap_idle_connections": args.imap,
            "smtp_connections": args.smtp,
            "seconds_to_open_imap": round(imap_open, 1),
            "rss_before_kib": before,
            "rss_with_imap_kib": after_imap,
            "rss_with_all_kib": after_all,
            "kib_per_idle_imap": round((after_imap - before) / max(args.imap, 1), 1),
            "pss_kib_per_idle_imap": round((pss_after_imap - pss_before) / max(args.imap, 1), 1),
            "new_imap_client_seconds": round(imap_seconds, 3),
            "new_smtp_client_seconds": round(smtp_seconds, 3),
            "server_open_files_limit": soft_limit,
        }
    finally:
        generators.stop()
        server.terminate()
        server.wait(timeout=60)


def open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def pss_kib(pids: list[int]) -> int:
    """Proportional set size: shared pages split between the processes that
    map them, so a per-process server is not charged its libraries N times."""
    total = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total


def bench_dovecot(directory: Path, connections: int) -> dict[str, object]:
    """Dovecot's RSS and PSS growth for ``connections`` IDLE sessions
    (bench/imap_bench.py's private instance and idle clients)."""
    dovecot = imap_bench.Dovecot(directory, imap_bench.free_port())
    dovecot.prepare(1, connections)
    dovecot.start()
    assert dovecot.process is not None
    imap_bench.DOVECOT_MASTER[:] = [dovecot.process.pid]
    try:
        pids = imap_bench.dovecot_pids()
        rss_before, pss_before = imap_bench.rss_kib(pids), pss_kib(pids)
        idlers = subprocess.Popen(
            [
                sys.executable,
                imap_bench.__file__,
                "--idlers",
                f"127.0.0.1:{dovecot.port}:{connections}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert idlers.stdout is not None and idlers.stdin is not None
        if b"ready" not in idlers.stdout.readline():
            raise RuntimeError("Dovecot idle clients failed")
        time.sleep(1)
        pids = imap_bench.dovecot_pids()
        rss_after, pss_after = imap_bench.rss_kib(pids), pss_kib(pids)
        idlers.stdin.close()
        idlers.wait(timeout=120)
    finally:
        dovecot.stop()
    return {
        "connections": connections,
        "rss_kib_per_connection": round((rss_after - rss_before) / connections, 1),
        "pss_kib_per_connection": round((pss_after - pss_before) / connections, 1),
    }


def main(args: argparse.Namespace) -> None:
    # The generators inherit this: each holds up to --per-process sockets.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    directory = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    results: dict[str, object] = {"cores": os.cpu_count()}
    try:
        results["mailstack"] = figures = bench_mailstack(directory / "mailstack", args)
        print(f"mailstack: {json.dumps(figures)}", flush=True)
        if args.dovecot and imap_bench.dovecot_available():
            results["dovecot"] = bench_dovecot(directory / "dovecot", args.dovecot_connections)
            print(f"dovecot: {json.dumps(results['dovecot'])}", flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    dovecot = results.get("dovecot")
    peer = {"dovecot": dovecot.get("pss_kib_per_connection")} if isinstance(dovecot, dict) else {}
    rows.write(
        args.json,
        [
            rows.row(
                "scale",
                f"KiB (PSS) per idle IMAP connection ({args.imap} held)",
                figures["pss_kib_per_idle_imap"],
                peer,
                better="lower",
            ),
            rows.row(
                "scale",
                f"s to serve a new IMAP client, {args.imap} IDLE + {args.smtp} SMTP held",
                figures["new_imap_client_seconds"],
                better="lower",
            ),
            rows.row(
                "scale",
                "s for a new SMTP delivery under the same load",
                figures["new_smtp_client_seconds"],
                better="lower",
            ),
        ],
    )
    print(json.dumps(results, indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imap", type=int, default=10_000, help="IMAP IDLE sessions")
    parser.add_argument("--smtp", type=int, default=1_000, help="SMTP sessions")
    parser.add_argument("--per-process", type=int, default=2_500, help="sessions per generator")
    parser.add_argument("--dovecot-connections", type=int, default=1_000)
    parser.add_argument("--no-dovecot", dest="dovecot", action="store_false")
    parser.add_argument("--json", help="also write the result rows to FILE (bench/run_all.py)")
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.generate:
        kind, source, port, count = arguments.generate.split(":")
        trio.run(generate, kind, source, int(port), int(count))
    else:
        main(arguments)
