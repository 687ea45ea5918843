"""Engine construction: SQLite pragmas and write locking, PostgreSQL pooling.

PostgreSQL: a pool of ``[database] pool_size`` connections plus up to
``max_overflow`` more under load, each checked with a ping when taken from
the pool (so a database restart costs no failed request once it is back),
with a connect timeout and TCP keepalives.

SQLite: the pysqlite driver's own transaction handling is switched off
(``isolation_level = None``) so that SQLAlchemy's ``begin`` event decides what
BEGIN is sent.  Write sessions (bound to :func:`writer` of the engine) start
with ``BEGIN IMMEDIATE``: the write lock is taken up front, so two writers
(threads or processes sharing the file) queue on ``busy_timeout`` instead of
failing with a lock upgrade deadlock; read sessions use a deferred BEGIN and
run in parallel under WAL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, make_url

from mailstack.config import DatabaseConfig

# Execution option marking connections of write sessions.
WRITE_OPTION = "mailstack_write"


# libpq TCP keepalives: a database host that vanishes without closing its
# connections (power loss, network partition) is noticed after about a
# minute of silence instead of the kernel's default two hours.
PG_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def pg_connect_args(database: DatabaseConfig) -> dict[str, Any]:
    """libpq parameters for every PostgreSQL connection we open (the pool's
    and the LISTEN connection's): bounded connect time, keepalives."""
    # libpq reads connect_timeout as whole seconds and treats 1 as 2.
    timeout = max(2, round(database.connect_timeout_seconds))
    return {"connect_timeout": timeout, **PG_KEEPALIVES}


def _json_encoder() -> Callable[[Any, int], Any] | None:
    """The C encoder json.dumps builds on every call (with its defaults), built once."""
    try:
        from _json import encode_basestring_ascii, make_encoder
    except ImportError:  # an interpreter without json's C accelerator
        return None
    defaults = json.JSONEncoder()
    return make_encoder(
        None,  # no circularity check: what is stored is built from parsed text
        defaults.default,
        encode_basestring_ascii,
        None,  # no indent, as json.dumps
        defaults.key_separator,
        defaults.item_separator,
        defaults.sort_keys,
        defaults.skipkeys,
        defaults.allow_nan,
    )


_ENCODE = _json_encoder()


def json_text(value: Any) -> str:
    """``json.dumps(value)``, the same text, for the JSON columns: every new
    message stores five of them, and json.dumps checks its keywords and
    builds a new encoder per call (8% of the writer process's instructions
    per message went to that).  Only a value that contains itself, which
    nothing stores, would fail differently (RecursionError, not ValueError)."""
    if _ENCODE is None:
        return json.dumps(value)
    return "".join(_ENCODE(value, 0))


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(
    url: str | URL, database: DatabaseConfig | None = None, *, foreign_keys: bool = True
) -> Engine:
    """The process's engine for ``url`` with our durability settings.

    ``foreign_keys=False`` is for migrations, where SQLite batch operations
    rebuild tables that others refer to.
    """
    database = database or DatabaseConfig()
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sqlalchemy.create_engine(
            parsed,
            pool_size=database.pool_size,
            max_overflow=database.max_overflow,
            # A connection the database dropped (restart, failover) is
            # found and replaced when it is checked out, before it is used.
            pool_pre_ping=True,
            connect_args=pg_connect_args(database),
            json_serializer=json_text,
        )
    engine = sqlalchemy.create_engine(parsed, json_serializer=json_text)
    busy_timeout_ms = database.busy_timeout_ms

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let the "begin" hook below send BEGIN (see the module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # FULL: the WAL is fsynced at every commit, so an acknowledged
            # delivery survives power loss, not only a process crash.
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sqlalchemy.Connection) -> None:
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take the write lock first."""
    return engine.execution_options(**{WRITE_OPTION: True})
