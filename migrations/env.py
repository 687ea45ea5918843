"""Alembic environment: runs revisions on the connection mailstack gives it.

``mailstack.store.migrate`` passes an open connection in
``config.attributes["connection"]``; the ``alembic`` command line can be
used too with ``-x url=...``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from mailstack.store.engine import create_engine
from mailstack.store.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things, so revisions use
    # batch_alter_table, which rebuilds the table there and is a plain
    # ALTER on PostgreSQL.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give the database with: alembic -x url=... upgrade head")
    engine = create_engine(url, foreign_keys=False)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; use mailstack db upgrade")
run_migrations_online()
