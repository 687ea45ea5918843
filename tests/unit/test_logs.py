"""The one-line log format."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from mailstack.config import LoggingConfig
from mailstack.logs import session_logger, setup_logging

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) ([\w.]+) (.*)$")


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ms_level = logging.getLogger("mailstack").level
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("mailstack").setLevel(ms_level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_format_with_and_without_session_id(output: io.StringIO) -> None:
    setup_logging(LoggingConfig(level="info"), output)
    log = logging.getLogger("mailstack.smtp")
    log.info("hello %s", "world")
    session_logger(log, "1a2b3c4d").warning("client said %r", "EHLO x")
    first, second = lines(output)
    m = LINE.match(first)
    assert m is not None
    assert m.groups() == ("INFO", "mailstack.smtp", "hello world")
    m = LINE.match(second)
    assert m is not None
    assert m.groups() == ("WARNING", "mailstack.smtp", "sid=1a2b3c4d client said 'EHLO x'")


def test_level_from_config_and_libraries_quiet(output: io.StringIO) -> None:
    setup_logging(LoggingConfig(level="warning"), output)
    logging.getLogger("mailstack.imap").info("hidden")
    logging.getLogger("mailstack.imap").error("shown")
    logging.getLogger("sqlalchemy.engine").info("library chatter")
    assert len(lines(output)) == 1
    assert lines(output)[0].endswith("ERROR mailstack.imap shown")


def test_newlines_and_tracebacks_stay_on_one_line(output: io.StringIO) -> None:
    setup_logging(LoggingConfig(level="debug"), output)
    log = logging.getLogger("mailstack.pop3")
    log.info("forged\n2026-01-01T00:00:00.000Z INFO mailstack.auth login ok")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("session failed", extra={"sid": "abcd"})
    out = lines(output)
    assert len(out) == 2
    assert "forged\\n2026" in out[0]
    assert "sid=abcd session failed | Traceback" in out[1]
    assert "ValueError: boom" in out[1]


def test_setup_twice_keeps_one_handler(output: io.StringIO) -> None:
    setup_logging(LoggingConfig(), output)
    setup_logging(LoggingConfig(), output)
    logging.getLogger("mailstack.x").info("once")
    assert len(lines(output)) == 1
