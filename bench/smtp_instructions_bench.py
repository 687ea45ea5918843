"""Instructions per SMTP session: mailstack's listener beside aiosmtpd, counted
by valgrind (callgrind), so the figure does not move with the shared
machine's load the way CPU seconds do.

Each server runs under ``valgrind --tool=callgrind --instr-atstart=no``,
gets a warm-up load uncounted, then ``callgrind_control -i on``, a fixed load
from Postfix's ``smtp-source`` (``--concurrency`` clients, one 1 KiB message
per session), ``-i off`` and a dump; the figure is the instructions the
server process ran (user space: the interpreter and every library, not the
kernel), divided by the messages.

What is counted: for mailstack the SMTP listener process with
``[database] writer_process = true``, whose child commits the messages
(the child is not under valgrind: its work per message depends on the batch
sizes, which valgrind's slowdown would change; bench/store_bench.py measures
it); for aiosmtpd its one process, whose handler writes and fsyncs each
message; trio-floor (``--servers ... trio-floor``) is a trio server that
parses and stores nothing, the least any trio server does per session, and
plain-floor (``--servers ... plain-floor``) the same on mailstack's own
PlainStream: the listener's I/O path alone, without SMTP core or store.

    python bench/smtp_instructions_bench.py               # ~3 minutes
    python bench/smtp_instructions_bench.py --messages 1000 --servers mailstack-wp
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import rows
from smtp_bench import (
    SMTP_SOURCE,
    SubprocessServer,
    run_smtp_source,
    start_aiosmtpd,
    start_floor,
    start_mailstack,
)

# A Python server under valgrind starts in 15-60 s on this machine.
START_SECONDS = 180.0
WARM_UP_MESSAGES = 200


def callgrind_wrapper(out_dir: Path) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/callgrind.out.%p",
    ]


def instructions_per_message(
    start: Callable[[list[str]], SubprocessServer], out_dir: Path, messages: int, concurrency: int
) -> float:
    out_dir.mkdir()
    server = start(callgrind_wrapper(out_dir))
    try:
        pid = str(server.process.pid)
        run_smtp_source(server.port, 1024, concurrency, WARM_UP_MESSAGES, 1)
        subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        run_smtp_source(server.port, 1024, concurrency, messages, 1)
        subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
    finally:
        server.stop()
    total = 0
    for dump in out_dir.glob("callgrind.out.*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    if total == 0:
        raise RuntimeError(f"callgrind recorded nothing for {server.name}")
    return total / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="counted messages per server")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--servers", nargs="+", default=["mailstack-wp", "aiosmtpd", "trio-floor"])
    parser.add_argument("--json", type=Path, help="also write the result rows here")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", SMTP_SOURCE):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (Debian packages valgrind and postfix)")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="smtp-instructions-") as tmp:
        starters: dict[str, Callable[[list[str]], SubprocessServer]] = {
            "mailstack-wp": lambda wrapper: start_mailstack(
                Path(tmp) / "mailstack",
                max_batch=64,
                writer_process=True,
                wrapper=wrapper,
                start_seconds=START_SECONDS,
            ),
            "aiosmtpd": lambda wrapper: start_aiosmtpd(
                Path(tmp), wrapper=wrapper, start_seconds=START_SECONDS
            ),
            "trio-floor": lambda wrapper: start_floor(
                "trio-floor", Path(tmp), wrapper=wrapper, start_seconds=START_SECONDS
            ),
            "plain-floor": lambda wrapper: start_floor(
                "plain-floor", Path(tmp), wrapper=wrapper, start_seconds=START_SECONDS
            ),
        }
        (Path(tmp) / "mailstack").mkdir()
        for name in args.servers:
            results[name] = instructions_per_message(
                starters[name], Path(tmp) / f"callgrind-{name}", args.messages, args.concurrency
            )
            print(f"{name:14} {results[name] / 1e6:7.3f} M instructions per message", flush=True)
    ours = results.get("mailstack-wp")
    for peer in ("aiosmtpd", "trio-floor", "plain-floor"):
        if ours is not None and peer in results:
            print(f"mailstack-wp / {peer}: {ours / results[peer]:.2f}x the instructions")
    if args.json:
        metric = f"M instructions per 1 KiB one-message session, {args.concurrency} clients"
        peers = {name: value / 1e6 for name, value in results.items() if name != "mailstack-wp"}
        row = rows.row(
            "smtp-instructions",
            metric,
            None if ours is None else ours / 1e6,
            peers,
            better="lower",
        )
        rows.write(args.json, [row])


if __name__ == "__main__":
    main()
