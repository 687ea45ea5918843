"""Suite-wide setup."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control starts background commands (`.ci/run &`)
    # with SIGINT ignored, and child processes inherit an ignored signal: the
    # tests that stop `mailstack` subprocesses with Ctrl-C (SIGINT) would then
    # hang or see the wrong exit status.  An installed handler is not
    # inherited across exec, so children start with the default again.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
