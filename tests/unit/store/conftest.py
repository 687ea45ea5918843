"""Store fixtures: a migrated database on real SQLite in tmp_path, and the
same on PostgreSQL (a fresh schema per test) when MAILSTACK_TEST_PG_URL is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from mailstack.config import Config, DatabaseConfig
from mailstack.store import migrate
from mailstack.store.records import AccountRecord
from mailstack.store.store import Store, open_store

PG_URL = os.environ.get("MAILSTACK_TEST_PG_URL", "")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mail.db'}"
        return
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def config(db_url: str, tmp_path: Path) -> Config:
    return Config(data_dir=str(tmp_path), database=DatabaseConfig(url=db_url))


@pytest.fixture
async def store(config: Config) -> AsyncIterator[Store]:
    migrate.upgrade(config.database_url)
    async with open_store(config) as opened:
        yield opened


@pytest.fixture
async def alice(store: Store) -> AccountRecord:
    await store.add_domain("example.test")
    return await store.add_account("alice@example.test", "hash-a")


@pytest.fixture
async def bob(store: Store, alice: AccountRecord) -> AccountRecord:
    return await store.add_account("bob@example.test", "hash-b")
