"""What SIGHUP does with the config file (service._reload_settings)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mailstack import service
from mailstack.config import load_config


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "mailstack.toml"
    path.write_text('[logging]\nlevel = "info"\n[pop3]\nlisten = ["127.0.0.1:0"]\n')
    return path


def test_log_level_applies_and_other_changes_are_named(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = load_config(config_file)
    config_file.write_text('[logging]\nlevel = "debug"\n[pop3]\nlisten = ["127.0.0.1:1110"]\n')
    # caplog restores the logger's level afterwards.
    with caplog.at_level(logging.INFO, logger="mailstack"):
        now = service._reload_settings(running)
        assert logging.getLogger("mailstack").level == logging.DEBUG
    assert now.logging.level == "debug"
    assert now.pop3 == running.pop3  # listeners are not rebuilt live
    messages = [r.getMessage() for r in caplog.records]
    assert "SIGHUP: log level is now debug" in messages
    assert "SIGHUP: changes to pop3 take effect at the next restart" in messages


def test_broken_file_keeps_the_running_settings(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = load_config(config_file)
    config_file.write_text("[logging]\nlevel = 3\n")
    with caplog.at_level(logging.ERROR, logger="mailstack"):
        assert service._reload_settings(running) is running
    [record] = caplog.records
    assert record.getMessage().startswith("SIGHUP: keeping the running settings: ")
    assert "logging.level: expected a string" in record.getMessage()


def test_defaults_have_no_file_to_reread() -> None:
    from mailstack.config import Config

    defaults = Config()
    assert service._reload_settings(defaults) is defaults
