"""Maildir import throughput: ``mailstack import maildir`` on generated mail.

    python bench/import_bench.py [--messages N] [--size BYTES] [--url URL]

Writes N messages of about SIZE bytes (default 20,000 of 4 KiB) into a
Maildir++ tree (INBOX plus two subfolders, Maildir flags on a third of
them), then imports it into a fresh SQLite store (WAL, synchronous=FULL;
or the given database URL) through the same code as the CLI
(``transfer.maildir`` + ``transfer.importer`` -> ``Store.append_many``,
group commit) and prints messages per second.  A second import of the same
tree then measures the re-run path (everything is a duplicate).
Target: at least 2,000 messages/s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import rows  # bench/rows.py: the --json row format
import trio

from mailstack.config import Config, DatabaseConfig
from mailstack.store import migrate
from mailstack.store.store import open_store
from mailstack.transfer import maildir
from mailstack.transfer.importer import import_folders
from mailstack.transfer.progress import Progress, Summary

FOLDERS = ("", ".Archive", ".Archive.2024")


def message(n: int, size: int) -> bytes:
    header = (
        f"From: Sender {n % 97} <sender{n % 97}@example.org>\n"
        "To: bench@example.test\n"
        f"Subject: benchmark message {n}\n"
        f"Message-ID: <bench{n}@example.org>\n"
        "Date: Mon, 1 Jan 2024 10:00:00 +0000\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again. 0123\n"
    body = line * max(1, (size - len(header)) // len(line))
    return header + body


def write_tree(root: Path, count: int, size: int) -> None:
    for name in FOLDERS:
        for sub in ("cur", "new", "tmp"):
            (root / name / sub).mkdir(parents=True, exist_ok=True)
    for n in range(count):
        folder = root / FOLDERS[n % len(FOLDERS)]
        info = ("S", "RS", "")[n % 3]
        (folder / "cur" / f"{1700000000 + n}.M{n}P1.bench,S={size}:2,{info}").write_bytes(
            message(n, size)
        )


async def run_import(config: Config, root: Path) -> tuple[Summary, float]:
    async with open_store(config) as store:
        account = await store.get_account("bench@example.test")
        if account is None:
            await store.add_domain("example.test")
            account = await store.add_account("bench@example.test", "unused")
        progress = Progress("imported", out=io.StringIO(), interactive=False)
        started = time.perf_counter()
        folders = await trio.to_thread.run_sync(maildir.folders, root)
        summary = await import_folders(store, account.id, folders, progress, trio.Event())
        return summary, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--json", help="also write the result rows here (bench/rows.py)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        root = Path(tmp) / "Maildir"
        write_tree(root, args.messages, args.size)
        os.sync()  # the tree is on disk before the clock starts
        url = args.url or f"sqlite:///{Path(tmp) / 'mail.db'}"
        config = Config(data_dir=tmp, database=DatabaseConfig(url=url))
        migrate.upgrade(url)
        for label in ("import", "re-run (all duplicates)"):
            summary, seconds = trio.run(run_import, config, root)
            handled = summary.messages + summary.duplicates
            print(
                f"{label}: {summary.messages} imported, {summary.duplicates} duplicates, "
                f"{len(summary.errors)} errors, {summary.bytes / 1048576:.1f} MiB "
                f"in {seconds:.2f} s = {handled / seconds:,.0f} messages/s"
            )
            results.append(
                rows.row("import", f"Maildir {label}, messages/s", round(handled / seconds))
            )
    rows.write(args.json, results)


if __name__ == "__main__":
    main()
