"""The real ``mailstack import`` / ``mailstack export`` commands in subprocesses."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from mailstack.config import Config, load_config
from mailstack.store import migrate
from mailstack.store.store import Store
from tests.cli.test_cli import _env, assert_fails, assert_ok, mailstack_cmd
from tests.integration.conftest import StackFactory
from tests.integration.test_transfer_imap import fill_source
from tests.unit.transfer import trees

T = TypeVar("T")
ADDRESSES = ("alice@example.test", "bob@example.test", "carol@example.test")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A migrated SQLite store with three accounts; returns the config file."""
    path = tmp_path / "mailstack.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "[auth]\nargon2_time_cost = 1\nargon2_memory_kib = 64\nargon2_parallelism = 1\n",
        encoding="utf-8",
    )
    # In-process: each CLI start costs a second, and tests/cli covers these commands.
    config = load_config(str(path))
    config.data_path.mkdir()
    migrate.upgrade(config.database_url)

    async def accounts(store: Store) -> None:
        await store.add_domain("example.test")
        for address in ADDRESSES:
            await store.add_account(address, "unused-hash")

    with_store(path, accounts)
    return path


def with_store(config_file: Path, fn: Callable[[Store], Awaitable[T]]) -> T:
    config: Config = load_config(str(config_file))

    async def run() -> T:
        store = await Store.open(config)
        try:
            return await fn(store)
        finally:
            await store.aclose()

    return trio.run(run)


Snapshot = dict[str, list[tuple[str, frozenset[str], int]]]


def snapshot(config_file: Path, address: str) -> Snapshot:
    got = with_store(config_file, lambda store: trees.snapshot(store, address))
    return {name: messages for name, messages in got.items() if messages}


def test_maildir_and_mbox_round_trip_through_the_cli(db: Path, tmp_path: Path) -> None:
    source = tmp_path / "Maildir"
    trees.write_maildir(source)
    first = mailstack_cmd("import", "maildir", "alice@example.test", str(source), config=db)
    # Two unreadable files are listed and make the exit status 1; the rest is in.
    assert first.returncode == 1, first
    stderr = first.stderr.splitlines()
    assert len(stderr) == 3 and "Traceback" not in first.stderr
    assert stderr[-1] == "mailstack: 2 problems, listed above"
    assert "1700009999.dangling" in first.stderr and "empty file" in first.stderr
    assert "imported 16 messages" in first.stdout
    alice = snapshot(db, "alice@example.test")
    assert sum(len(v) for v in alice.values()) == 16

    again = mailstack_cmd("import", "maildir", "alice@example.test", str(source), config=db)
    assert "imported 0 messages" in again.stdout and "16 duplicates skipped" in again.stdout
    assert snapshot(db, "alice@example.test") == alice

    out_maildir, out_mbox = tmp_path / "out-maildir", tmp_path / "out-mbox"
    stdout = assert_ok(
        mailstack_cmd("export", "maildir", "alice@example.test", str(out_maildir), config=db)
    )
    assert "exported 16 messages" in stdout
    assert_ok(mailstack_cmd("export", "mbox", "alice@example.test", str(out_mbox), config=db))
    assert_ok(mailstack_cmd("import", "maildir", "bob@example.test", str(out_maildir), config=db))
    assert_ok(mailstack_cmd("import", "mbox", "carol@example.test", str(out_mbox), config=db))
    assert snapshot(db, "bob@example.test") == alice
    assert snapshot(db, "carol@example.test") == alice


def test_mbox_file_into_a_named_folder(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "old.mbox"
    path.write_bytes(
        b"From a Mon Jan  1 10:00:00 2024\nSubject: one\nStatus: RO\n\nbody\n\n"
        b"From b Mon Jan  1 11:00:00 2024\nSubject: two\n\n>From quoted\n"
    )
    stdout = assert_ok(
        mailstack_cmd(
            "import", "mbox", "alice@example.test", str(path), "--folder", "Old/Mail", config=db
        )
    )
    assert "imported 2 messages" in stdout
    got = snapshot(db, "alice@example.test")
    assert list(got) == ["Old/Mail"]
    assert [flags for _, flags, _ in got["Old/Mail"]] == [{"\\Seen"}, set()]


def test_clear_one_line_errors(db: Path, tmp_path: Path) -> None:
    assert_fails(
        mailstack_cmd("import", "maildir", "nobody@example.test", str(tmp_path), config=db),
        1,
        "no such account",
    )
    assert_fails(
        mailstack_cmd("import", "maildir", "alice@example.test", str(tmp_path), config=db),
        1,
        "no Maildir",
    )
    assert_fails(
        mailstack_cmd("import", "mbox", "alice@example.test", str(tmp_path / "x"), config=db),
        1,
        "does not exist",
    )
    assert_fails(
        mailstack_cmd("export", "mbox", "alice@example.test", str(tmp_path), config=db),
        1,
        "not an empty directory",
    )
    assert_fails(
        mailstack_cmd("import", "imap", "alice@example.test", "--from", "http://x", config=db),
        1,
        "imaps://",
    )
    with_password = mailstack_cmd(
        "import", "imap", "alice@example.test", "--from", "imaps://u:pw@h", config=db
    )
    assert_fails(with_password, 1, "no password in the URL")


def test_ctrl_c_stops_at_a_message_boundary_and_a_rerun_continues(db: Path, tmp_path: Path) -> None:
    source = tmp_path / "Big"
    for sub in ("cur", "new", "tmp"):
        (source / sub).mkdir(parents=True)
    total = 12_000
    for n in range(total):
        (source / "cur" / f"{1700000000 + n}.M{n}.host:2,S").write_bytes(
            trees.message(n, body=b"y" * 1000)
        )
    command = ["import", "maildir", "alice@example.test", str(source)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailstack", "--config", str(db), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )  # fmt: skip

    async def count(store: Store) -> int:
        account = await store.get_account("alice@example.test")
        assert account is not None
        mailbox = await store.get_mailbox(account.id, "INBOX")
        assert mailbox is not None
        return mailbox.messages

    deadline = time.monotonic() + 60
    while with_store(db, count) == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert "stopping after the current batch" in stderr
    assert stdout.splitlines()[-1].endswith("interrupted: run the same command again to continue")
    stored = with_store(db, count)
    assert 0 < stored < total

    rerun = assert_ok(
        mailstack_cmd("import", "maildir", "alice@example.test", str(source), config=db)
    )
    assert f"imported {total - stored} messages" in rerun
    assert f"{stored} duplicates skipped" in rerun
    assert with_store(db, count) == total


async def test_import_imap_command(stack_factory: StackFactory, db: Path) -> None:
    with trio.fail_after(120):
        source = await stack_factory(services=("imap",))
        await fill_source(source)
        _, port = source.addr("imap", implicit_tls=True)
        url = f"imaps://alice%40example.test@localhost:{port}"
        argv = (
            "import",
            "imap",
            "bob@example.test",
            "--from",
            url,
            "--ca-file",
            str(source.ca_pem_path),
        )

        def run() -> subprocess.CompletedProcess[str]:
            return mailstack_cmd(*argv, config=db, stdin="alice-password\n")

        first = assert_ok(await trio.to_thread.run_sync(run))
        assert "imported 6 messages" in first
        second = assert_ok(await trio.to_thread.run_sync(run))
        assert "imported 0 messages" in second and "6 duplicates skipped" in second
        wrong = await trio.to_thread.run_sync(
            lambda: mailstack_cmd(*argv, config=db, stdin="wrong\n")
        )
        assert wrong.returncode == 1 and "localhost" in wrong.stderr.splitlines()[-1]
    original = await trees.snapshot(source.store, "alice@example.test")
    copied = await trio.to_thread.run_sync(lambda: snapshot(db, "bob@example.test"))
    assert copied == {k: v for k, v in original.items() if v}
