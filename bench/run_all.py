"""Run every benchmark in bench/ and print one table of all their figures.

    python bench/run_all.py [--quick] [--only smtp imap ...] [--timeout 3600]

Each ``bench/*_bench.py`` is found by name and run with ``--json FILE`` (the
row format of ``bench/rows.py``: our figure beside each peer's from the same
run: aiosmtpd, Dovecot, Postfix where installed).  A bench that fails, times
out or writes no rows gets a row saying so and the others still run.
``--quick`` passes each known bench smaller sizes (minutes instead of an hour
in all); the figures are then rougher but still side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Smaller runs for --quick; a bench not named here runs with its defaults.
QUICK: dict[str, list[str]] = {
    "store": ["--messages", "500"],
    "smtp": ["--sizes", "1024", "--concurrency", "10", "--messages", "500"],
    # The QRESYNC scenario changes UIDs up to 9000: keep 10,000 messages.
    "imap": ["--concurrency", "10", "--idle", "200"],
    "pop3": ["--messages", "200", "--concurrency", "1", "4"],
    "import": ["--messages", "2000"],
    "scale": ["--imap", "2000", "--smtp", "200", "--dovecot-connections", "200"],
}


def discover(only: list[str]) -> list[tuple[str, Path]]:
    found = sorted((p.name.removesuffix("_bench.py"), p) for p in HERE.glob("*_bench.py"))
    return [(name, path) for name, path in found if not only or name in only]


def run_one(name: str, path: Path, quick: bool, timeout: float) -> tuple[list[dict], str]:
    """The bench's rows and a status line ("ok", "failed: ...")."""
    args = [sys.executable, str(path), *(QUICK.get(name, []) if quick else [])]
    takes_json = "--json" in path.read_text()
    with tempfile.TemporaryDirectory(prefix=f"run-all-{name}-") as tmp:
        out_file = Path(tmp) / "rows.json"
        if takes_json:
            args += ["--json", str(out_file)]
        log = Path(tmp) / "output.txt"
        started = time.monotonic()
        try:
            with log.open("wb") as output:
                done = subprocess.run(
                    args, stdout=output, stderr=subprocess.STDOUT, timeout=timeout, check=False
                )
        except subprocess.TimeoutExpired:
            return [], f"timed out after {timeout:.0f} s"
        seconds = time.monotonic() - started
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        if done.returncode != 0:
            return [], f"failed (exit {done.returncode}): {' | '.join(tail)[:200]}"
        if not takes_json:
            return [], f"ran in {seconds:.0f} s; no --json rows (see bench/rows.py)"
        if not out_file.exists():
            return [], f"ran in {seconds:.0f} s but wrote no rows"
        return json.loads(out_file.read_text()), f"ok ({seconds:.0f} s)"


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def ratio(ours: object, theirs: object, better: str) -> str:
    """How much better mailstack is: >1 means better, whichever way is better."""
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float):
        return ""
    if not ours or not theirs:
        return ""
    value = ours / theirs if better == "higher" else theirs / ours
    return f" ({value:.2f}x)"


def print_table(results: list[tuple[str, list[dict], str]]) -> None:
    lines = [("bench", "metric", "mailstack", "peers (mailstack's advantage: >1x is better)")]
    for name, rows, status in results:
        if not rows:
            lines.append((name, "(no figures)", "", status))
            continue
        for row in rows:
            peers = ", ".join(
                f"{peer} {fmt(value)}{ratio(row['mailstack'], value, row.get('better', 'higher'))}"
                for peer, value in row.get("peers", {}).items()
            )
            lines.append((name, row["metric"], fmt(row["mailstack"]), peers or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    for index, line in enumerate(lines):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:3])), line[3])
        if index == 0:
            print("-" * (sum(widths) + 50))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs of each bench")
    parser.add_argument("--only", nargs="+", default=[], help="bench names, e.g. smtp imap")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per bench")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()},"
        f" Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )
    results = []
    for name, path in discover(args.only):
        print(f"running {path.name} ...", flush=True)
        rows, status = run_one(name, path, args.quick, args.timeout)
        print(f"  {status}", flush=True)
        results.append((name, rows, status))
    print()
    print_table(results)


if __name__ == "__main__":
    main()
