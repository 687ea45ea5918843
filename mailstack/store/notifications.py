"""PostgreSQL LISTEN/NOTIFY: wake the change watcher when any host commits.

A trigger on ``change_log`` (migration 0002_pg) sends ``NOTIFY
mailstack_changes, '<schema>'`` in the transaction that wrote the changes;
PostgreSQL delivers it to every listening session when, and only if, that
transaction commits.  One worker thread per process holds a dedicated
autocommit connection (outside the SQLAlchemy pool, which would hand it to
others) that LISTENs and waits in ``Connection.notifies(timeout=...)``; each
notification for our schema is handed to the trio side
(``TrioToken.run_sync_soon(wake)``), and the watcher then reads the change
log.  So a delivery on host A reaches an IDLE session on host B in one
round trip, while the watcher itself only polls every
``[database] safety_poll_seconds``.

The connection is rebuilt on its own after an error (database restart,
network cut) with a growing pause, and every (re)connect wakes the watcher
once: whatever was committed while nobody listened is read then.  A silently
dead TCP connection is found by a ``SELECT 1`` every ``PING_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import trio
from sqlalchemy import Engine

log = logging.getLogger("mailstack.store")

# Keep in step with migrations/versions/0002_pg_maildrop_locks_and_notify.py.
CHANNEL = "mailstack_changes"
APPLICATION_NAME = "mailstack change listener"
# How often the listening thread looks whether it should stop.
WAIT_SECONDS = 0.5
# Liveness check of an idle LISTEN connection.
PING_SECONDS = 15.0
# Pause before reconnecting: doubles from the first to the last value.
RECONNECT_FIRST_SECONDS = 0.25
RECONNECT_MAX_SECONDS = 5.0


class ChangeNotifications:
    """``run(wake)`` listens until cancelled, calling ``wake()`` (on the trio
    thread) for every committed change-log write of this schema."""

    def __init__(self, engine: Engine, connect_args: dict[str, Any]) -> None:
        # The engine's own connect arguments: same host, credentials and
        # options (search_path) as every pooled connection.
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._connect_args: tuple[Any, ...] = tuple(args)
        self._connect_kwargs: dict[str, Any] = {**kwargs, **connect_args}

    async def run(self, wake: Callable[[], None]) -> None:
        stop = threading.Event()
        token = trio.lowlevel.current_trio_token()

        def wake_from_thread() -> bool:
            try:
                # Queued, not waited for: kicks are idempotent until the
                # watcher's next read, so a burst costs the thread nothing.
                token.run_sync_soon(wake)
            except trio.RunFinishedError:
                return False
            return True

        try:
            # abandon_on_cancel: the thread notices ``stop`` within
            # WAIT_SECONDS and closes its connection by itself.
            await trio.to_thread.run_sync(
                self._listen, wake_from_thread, stop, abandon_on_cancel=True
            )
        finally:
            stop.set()

    def _listen(self, wake: Callable[[], bool], stop: threading.Event) -> None:
        import psycopg  # the optional "postgresql" extra; only loaded on PostgreSQL

        pause = RECONNECT_FIRST_SECONDS
        failing = False
        while not stop.is_set():
            try:
                with psycopg.connect(
                    *self._connect_args, **self._connect_kwargs, autocommit=True
                ) as conn:
                    row = conn.execute("SELECT current_schema()").fetchone()
                    schema = row[0] if row else None
                    # Named in pg_stat_activity, so an operator can tell it apart.
                    conn.execute(
                        "SELECT set_config('application_name', %s, false)",
                        (f"{APPLICATION_NAME} {schema}",),
                    )
                    conn.execute(f"LISTEN {CHANNEL}")
                    if failing:
                        log.info("change notifications: listening again")
                    failing = False
                    pause = RECONNECT_FIRST_SECONDS
                    # Catch up on what was committed before LISTEN took effect.
                    if not wake():
                        return
                    if not self._wait_for_notifications(conn, schema, wake, stop):
                        return
            except psycopg.Error as exc:
                if not failing:
                    detail = " ".join(str(exc).split())
                    log.warning("change notifications: connection lost (%s); polling", detail)
                failing = True
            stop.wait(pause)
            pause = min(pause * 2, RECONNECT_MAX_SECONDS)

    @staticmethod
    def _wait_for_notifications(
        conn: Any, schema: str | None, wake: Callable[[], bool], stop: threading.Event
    ) -> bool:
        """Hand notifications over until ``stop``; False once trio has gone.
        psycopg errors (the connection broke) propagate."""
        last_ping = time.monotonic()
        while not stop.is_set():
            for notify in conn.notifies(timeout=WAIT_SECONDS):
                if notify.payload == schema and not wake():
                    return False
                if stop.is_set():
                    break
            if time.monotonic() - last_ping > PING_SECONDS:
                conn.execute("SELECT 1")
                last_ping = time.monotonic()
        return True
