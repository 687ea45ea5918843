"""A throw-away PostgreSQL schema per test, when MAILSTACK_TEST_PG_URL is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

PG_URL = os.environ.get("MAILSTACK_TEST_PG_URL", "")


@contextmanager
def fresh_schema(prefix: str = "test", base_url: str = "") -> Iterator[str]:
    """A URL whose connections use a new, empty schema of ``base_url``
    (default MAILSTACK_TEST_PG_URL); dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    base_url = base_url or PG_URL
    # NullPool: a fresh connection each time, so a test that restarts the
    # server does not leave the DROP below a dead pooled connection.
    admin = sqlalchemy.create_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()
