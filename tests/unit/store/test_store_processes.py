"""Several processes on one database, and durability across SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import trio

from mailstack.config import Config
from mailstack.store import migrate
from mailstack.store.store import open_store
from tests.unit.store.conftest import REPO


def _setup(config: Config) -> int:
    migrate.upgrade(config.database_url)

    async def create() -> int:
        async with open_store(config) as store:
            await store.add_domain("example.test")
            return (await store.add_account("alice@example.test", "h")).id

    return trio.run(create)


def _worker(config: Config, account_id: int, count: int, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [config.database_url, config.data_dir, str(account_id), str(count), *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.unit.store.deliver_worker", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _uids(config: Config) -> list[tuple[int, bytes]]:
    async def read() -> list[tuple[int, bytes]]:
        async with open_store(config) as store:
            account = await store.get_account("alice@example.test")
            assert account is not None
            inbox = await store.get_mailbox(account.id, "INBOX")
            assert inbox is not None
            return [
                (m.uid, await store.read_content(m.content_id))
                for m in await store.list_messages(inbox.id)
            ]

    return trio.run(read)


def test_two_processes_allocate_distinct_uids(config: Config) -> None:
    account_id = _setup(config)
    workers = [_worker(config, account_id, 60) for _ in range(2)]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0]
    printed = [int(line) for out in outputs for line in out.split()]
    assert sorted(printed) == list(range(1, 121))
    assert [uid for uid, _ in _uids(config)] == list(range(1, 121))


def test_acknowledged_delivery_survives_sigkill(config: Config) -> None:
    account_id = _setup(config)
    worker = _worker(config, account_id, 1, "--hang")
    assert worker.stdout is not None
    line = worker.stdout.readline()
    # Killed the moment deliver() returned: no clean shutdown, no checkpoint.
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    uid = int(line)
    stored = dict(_uids(config))
    assert stored[uid] == b"Subject: worker 0\r\n\r\nbody 0\r\n"
