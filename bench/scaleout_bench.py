"""Scale-out benchmark: front-end processes on PostgreSQL against SQLite.

Three set-ups from the same run, each a fresh database with real
``mailstack serve`` processes (tests/support/frontends.py):

- ``sqlite x1``: one process on SQLite (the embedded default);
- ``pg x1``: one process on PostgreSQL;
- ``pg x2``: two processes ("hosts", own ports and data_dir) on one
  PostgreSQL schema, clients spread over both.

For each: **delivery** sends ``--messages`` messages of ``--size`` bytes
over ``--connections`` SMTP connections (spread round-robin over the
hosts), each message acknowledged (250) before the connection's next, and
reports messages per second from the first connection to the last 250.
**FETCH** then has ``--fetch-clients`` IMAP clients (spread likewise) each
``UID FETCH 1:* (FLAGS BODY.PEEK[])`` the whole mailbox ``--fetch-rounds``
times, and reports messages fetched per second.  Clients are separate
processes so their parsing does not share a GIL with each other.

    MAILSTACK_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python bench/scaleout_bench.py
    python bench/scaleout_bench.py --pg-url postgresql+psycopg://... --messages 4000

On a machine with fewer cores than processes (server processes, PostgreSQL,
clients) the second front-end competes for the same CPUs; the figures say
what this machine does, the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import smtplib
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.frontends import prepare_database, running_hosts
from tests.support.pg import fresh_schema

ADDRESS = "alice@example.test"
PASSWORD = "alice-password"


def make_message(index: int, size: int) -> bytes:
    header = (
        f"From: carol@remote.test\r\nTo: {ADDRESS}\r\nSubject: bench {index}\r\n"
        f"Message-ID: <{index}.{time.time_ns()}@remote.test>\r\n\r\n"
    ).encode()
    line = b"benchmark body text, a line of plain words repeated to the size.\r\n"
    body = line * max(0, (size - len(header)) // len(line))
    return header + body


# -- clients (each in its own process) ----------------------------------------


def send(port: int, first: int, count: int, size: int) -> tuple[float, float]:
    """Deliver ``count`` messages on one connection; (start, end) wall time."""
    messages = [make_message(first + n, size) for n in range(count)]
    start = time.time()
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        for raw in messages:
            client.sendmail("carol@remote.test", [ADDRESS], raw)
    return start, time.time()


def fetch(port: int, rounds: int) -> tuple[float, float, int]:
    """FETCH the whole INBOX ``rounds`` times; (start, end, messages)."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    client.login(ADDRESS, PASSWORD)
    client.select("INBOX", readonly=True)
    fetched = 0
    start = time.time()
    for _ in range(rounds):
        status, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        assert status == "OK", data
        fetched += sum(1 for item in data if isinstance(item, tuple))
    end = time.time()
    client.logout()
    return start, end, fetched


# -- one set-up ------------------------------------------------------------------


@dataclass
class Result:
    name: str
    deliveries_per_second: float
    fetches_per_second: float


def measure(name: str, url: str, processes: int, args: argparse.Namespace, work: Path) -> Result:
    directory = work / name.replace(" ", "-")
    directory.mkdir()
    trio.run(prepare_database, url, directory)
    database = {"pool_size": args.pool_size, "max_overflow": args.max_overflow}
    with running_hosts(
        directory, processes, database_url=url, services=("smtp", "imap"), database=database
    ) as hosts:
        smtp_ports = [host.port("smtp") for host in hosts]
        imap_ports = [host.port("imap") for host in hosts]
        share, extra = divmod(args.messages, args.connections)
        jobs = []
        first = 0
        for n in range(args.connections):
            count = share + (1 if n < extra else 0)
            jobs.append((smtp_ports[n % len(smtp_ports)], first, count, args.size))
            first += count
        with ProcessPoolExecutor(max(args.connections, args.fetch_clients)) as pool:
            # Warm the pool's processes (imports) outside the timing.
            list(pool.map(time.sleep, [0] * max(args.connections, args.fetch_clients)))
            spans = list(pool.map(send, *zip(*jobs, strict=True)))
            delivered = args.messages / (max(e for _, e in spans) - min(s for s, _ in spans))
            clients = [imap_ports[n % len(imap_ports)] for n in range(args.fetch_clients)]
            fetches = list(pool.map(fetch, clients, [args.fetch_rounds] * len(clients)))
        total = sum(count for _, _, count in fetches)
        assert total == args.messages * args.fetch_rounds * args.fetch_clients, total
        fetched = total / (max(e for _, e, _ in fetches) - min(s for s, _, _ in fetches))
    return Result(name, delivered, fetched)


@contextmanager
def pg_schema(base_url: str) -> Iterator[str]:
    with fresh_schema("bench_scaleout", base_url) as url:
        yield url


def main() -> None:
    args = parse_args()
    if not args.pg_url:
        sys.exit("give --pg-url or set MAILSTACK_TEST_PG_URL (a PostgreSQL database to use)")
    print(
        f"scale-out bench: {args.messages} messages of {args.size} B over "
        f"{args.connections} SMTP connections; FETCH by {args.fetch_clients} IMAP clients "
        f"x {args.fetch_rounds} rounds; {os.cpu_count()} CPUs"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="scaleout-bench-") as temp:
        work = Path(temp)
        results.append(measure("sqlite x1", f"sqlite:///{work / 'mail.db'}", 1, args, work))
        for processes in (1, 2):
            with pg_schema(args.pg_url) as url:
                results.append(measure(f"pg x{processes}", url, processes, args, work))
    base = results[0]
    print(f"{'set-up':<10} {'deliveries/s':>13} {'ratio':>6} {'FETCH msgs/s':>13} {'ratio':>6}")
    for r in results:
        print(
            f"{r.name:<10} {r.deliveries_per_second:>13.0f} "
            f"{r.deliveries_per_second / base.deliveries_per_second:>6.2f} "
            f"{r.fetches_per_second:>13.0f} {r.fetches_per_second / base.fetches_per_second:>6.2f}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-url", default=os.environ.get("MAILSTACK_TEST_PG_URL", ""))
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096, help="bytes per message")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--fetch-clients", type=int, default=4)
    parser.add_argument("--fetch-rounds", type=int, default=3)
    parser.add_argument("--pool-size", type=int, default=5, help="[database] pool_size")
    parser.add_argument("--max-overflow", type=int, default=5, help="[database] max_overflow")
    return parser.parse_args()


if __name__ == "__main__":
    main()
