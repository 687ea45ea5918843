"""``mailstack serve`` lifts its soft open-files limit to the hard limit."""

from __future__ import annotations

import logging
import resource

import pytest

from mailstack.service import raise_open_files_limit


def test_soft_limit_raised_to_hard_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("needs a finite hard limit above 256")
    caplog.set_level(logging.INFO, "mailstack")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert raise_open_files_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert f"open files limit raised from 256 to {hard}" in caplog.text
        # Already at the hard limit: nothing to do, nothing logged.
        caplog.clear()
        assert raise_open_files_limit() == hard
        assert "raised" not in caplog.text
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
