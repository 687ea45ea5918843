"""Logging setup: one line per event on stderr.

Format: ``2026-01-02T03:04:05.678Z INFO mailstack.smtp sid=1a2b3c4d message``.
The ``sid=`` field appears when the record carries a session id (pass
``extra={"sid": peer.session_id}`` or use :func:`session_logger`).  Newlines in
messages and tracebacks are escaped, so a hostile client cannot forge log
lines and every event stays one line for journald and grep.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

from mailstack.config import LoggingConfig


class LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z"
        )
        parts = [ts, record.levelname, record.name]
        sid = getattr(record, "sid", None)
        if sid:
            parts.append(f"sid={sid}")
        text = record.getMessage()
        if record.exc_info:
            text += " | " + self.formatException(record.exc_info)
        parts.append(text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n"))
        return " ".join(parts)


class SessionLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds ``sid`` to every record logged through it."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**kwargs.get("extra", {}), **(self.extra or {})}
        return msg, kwargs


def session_logger(logger: logging.Logger, session_id: str) -> SessionLogger:
    return SessionLogger(logger, {"sid": session_id})


_HANDLER_NAME = "mailstack-stderr"


def setup_logging(config: LoggingConfig, stream: TextIO | None = None) -> None:
    """Log to stderr: ``mailstack.*`` at the configured level, libraries
    (trio, SQLAlchemy, alembic) at WARNING and above, all in one format.

    Idempotent: calling it again replaces the handler instead of adding a
    second one.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(LineFormatter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("mailstack").setLevel(config.level.upper())
