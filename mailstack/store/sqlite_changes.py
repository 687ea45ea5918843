"""SQLite: wake the change watcher when another process commits.

SQLite has no LISTEN/NOTIFY, but every commit writes the database's files:
in WAL mode it appends to (or, after a checkpoint, rewrites) ``<db>-wal``,
otherwise it writes the database file itself.  Looking at their size and
modification time (``os.stat``, no query, no thread) every
``[database] change_check_seconds`` costs next to nothing, so commits made
by another process (an SMTP service in its own systemd unit) reach IMAP
IDLE, POP3 and WebSocket subscribers within that interval plus one read of
the change log, while the change log itself is only read when something
changed.  Timestamps on some file systems are coarse: the watcher's
periodic poll (``[database] safety_poll_seconds``) catches whatever a check
misses.  Our own commits change the files too; the extra wake-up finds
nothing new, which costs one indexed query.  A process nobody subscribed to
(an SMTP-only unit) looks only every ``IDLE_CHECK_SECONDS``: a hundred
wake-ups a second would be its largest idle cost, for no reader.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import trio

_Signature = tuple[tuple[int, int] | None, ...]

IDLE_CHECK_SECONDS = 0.25


def _signature(paths: tuple[Path, ...]) -> _Signature:
    found: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            found.append(None)  # no WAL file yet, or the database is gone
        else:
            found.append((stat.st_size, stat.st_mtime_ns))
    return tuple(found)


class SqliteFileWatch:
    def __init__(
        self, database: Path, interval: float, *, active: Callable[[], bool] = lambda: True
    ) -> None:
        self._paths = (database, database.with_name(database.name + "-wal"))
        self._interval = interval
        self._active = active  # whether anybody waits for changes now

    async def run(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever the database files change; runs until cancelled."""
        last = _signature(self._paths)
        while True:
            await trio.sleep(self._interval if self._active() else IDLE_CHECK_SECONDS)
            # Two stat calls on a local file: microseconds, fine on the trio thread.
            current = _signature(self._paths)
            if current != last:
                last = current
                wake()
