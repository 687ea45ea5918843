"""The batch-delivery statements, compiled once and run on the DB-API cursor.

Why: a batch of new messages (``transactions.defer_inserts``) runs seven
statements whatever its size, and at one message per batch (a lone client)
SQLAlchemy's per-execution work (execution context, parameter processing,
result objects) cost about three times what SQLite spent running them.
Here each statement is compiled by SQLAlchemy once per dialect, with its
bind processors (JSON, DateTime, Boolean, LargeBinary as the dialect stores
them), so what is stored is exactly what ``Connection.execute`` would store;
only the per-call machinery is skipped.  The cursor belongs to the
session's connection, so the statements are part of its transaction.

Only statements whose results need no type processing (integers and
strings) are run this way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    # Per placeholder: bind name, the value of a literal bind (else
    # _GIVEN: the caller's value), the dialect's bind processor or None.
    slots: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]
    # False when the DB-API takes a mapping (pyformat: psycopg).
    positional: bool

    def parameters(self, values: dict[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        params = []
        for name, fixed, process in self.slots:
            value = values[name] if fixed is _GIVEN else fixed
            params.append(value if process is None else process(value))
        if self.positional:
            return params
        return {name: value for (name, _, _), value in zip(self.slots, params, strict=True)}


_GIVEN = object()


_CACHE: dict[tuple[Any, ...], tuple[ClauseElement, _Compiled]] = {}


def _compiled(statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    # The statement by identity: they are module constants (kept alive in
    # the value, so an id is never reused while its entry exists).  The
    # dialect by what decides the SQL text: driver class, placeholder style
    # and server version (e.g. RETURNING needs SQLite 3.35).
    cache_key = (
        id(statement),
        type(dialect),
        dialect.paramstyle,
        dialect.server_version_info,
        keys,
    )
    found = _CACHE.get(cache_key)
    if found is not None:
        return found[1]
    compiled = statement.compile(dialect=dialect, column_keys=list(keys) or None)
    assert isinstance(compiled, SQLCompiler)
    names = compiled.positiontup if compiled.positiontup is not None else list(compiled.binds)
    slots = []
    for name in names:
        bind = compiled.binds[name]
        # A bind with a value in the statement itself (e.g. the name
        # "INBOX") is a constant; the others come from the caller.
        fixed = _GIVEN if bind.required or name in keys else bind.effective_value
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        slots.append((name, fixed, process))
    entry = _Compiled(compiled.string, tuple(slots), compiled.positiontup is not None)
    _CACHE[cache_key] = (statement, entry)
    return entry


class Runner:
    """The batch statements of one transaction, on one cursor of its
    connection (taken from the session once, not per statement)."""

    def __init__(self, session: Session) -> None:
        connection = session.connection()
        self._dialect = connection.dialect
        # The driver's own cursor (sqlite3, psycopg): parameters as its
        # placeholder style wants them, see _Compiled.parameters.
        self._cursor: Any = connection.connection.cursor()

    def close(self) -> None:
        self._cursor.close()

    def execute_many(self, statement: ClauseElement, rows: Sequence[dict[str, Any]]) -> None:
        """INSERT or UPDATE once per row of ``rows`` (all with the same keys)."""
        if not rows:
            return
        compiled = _compiled(statement, self._dialect, tuple(rows[0]))
        self._cursor.executemany(compiled.sql, [compiled.parameters(r) for r in rows])

    def first_row(self, statement: ClauseElement, values: dict[str, Any]) -> Any:
        """The first row (a tuple) of a SELECT or RETURNING statement, or None."""
        compiled = _compiled(statement, self._dialect, ())
        self._cursor.execute(compiled.sql, compiled.parameters(values))
        return self._cursor.fetchone()

    def insert_returning_ids(
        self, statement: ClauseElement, rows: Sequence[dict[str, Any]]
    ) -> list[int]:
        """Run an ``INSERT ... RETURNING id`` once per row; the ids in row order."""
        if not rows:
            return []
        compiled = _compiled(statement, self._dialect, tuple(rows[0]))
        ids = []
        for row in rows:
            self._cursor.execute(compiled.sql, compiled.parameters(row))
            ids.append(self._cursor.fetchone()[0])
        return ids
