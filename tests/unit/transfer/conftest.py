"""A migrated SQLite store in tmp_path with three accounts, and generated
Maildir trees (see trees.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailstack.config import Config, DatabaseConfig
from mailstack.store import migrate
from mailstack.store.store import Store, open_store

ACCOUNTS = ("alice@example.test", "bob@example.test", "carol@example.test")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    url = f"sqlite:///{tmp_path / 'mail.db'}"
    return Config(data_dir=str(tmp_path), database=DatabaseConfig(url=url))


@pytest.fixture
async def store(config: Config) -> AsyncIterator[Store]:
    migrate.upgrade(config.database_url)
    async with open_store(config) as opened:
        await opened.add_domain("example.test")
        for address in ACCOUNTS:
            await opened.add_account(address, "unused-hash")
        yield opened
