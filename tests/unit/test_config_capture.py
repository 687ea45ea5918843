"""[capture] and the WebSocket limits: parsing and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack.cli import dev_config
from mailstack.config import CaptureInbox, ConfigError, parse_config

GOOD = """
[capture]
enabled = true
account = "all@capture.test"
fault_injection = true
[[capture.inboxes]]
account = "a@capture.test"
catch = ["team-a.example", "ci@shared.example"]
"""


def test_capture_section() -> None:
    config = parse_config(GOOD, "x.toml")
    assert config.capture.enabled and config.capture.account == "all@capture.test"
    assert config.capture.inboxes == (
        CaptureInbox("a@capture.test", ("team-a.example", "ci@shared.example")),
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[capture]\nenabled = true\n", "capture.account"),
        ('[capture]\naccount = "no-at-sign"\n', "capture.account"),
        ("[capture]\nfault_injection = true\n", "capture.fault_injection"),
        ('[[capture.inboxes]]\naccount = "a@x.test"\ncatch = []\n', "capture.inboxes[0].catch"),
        (
            '[[capture.inboxes]]\naccount = "a@x.test"\ncatch = ["a b"]\n',
            "capture.inboxes[0].catch",
        ),
        (
            '[[capture.inboxes]]\naccount = "a@x.test"\ncatch = ["d.example"]\n'
            '[[capture.inboxes]]\naccount = "b@x.test"\ncatch = ["D.example"]\n',
            "capture.inboxes[1].catch",
        ),
        ('[[capture.inboxes]]\naccount = "a@x.test"\nmatch = ["d"]\n', "capture.inboxes[0].match"),
        ("[capture]\nretention_interval_seconds = 0\n", "capture.retention_interval_seconds"),
        (
            '[capture]\nenabled = true\naccount = "a@x.test"\n[outbound]\nenabled = true\n',
            "capture.enabled",
        ),
        ("[database]\nchange_check_seconds = 0\n", "database.change_check_seconds"),
        ("[websocket]\nmax_page_size = -1\n", "websocket.max_page_size"),
        ("[websocket]\nmax_page_size = 0\n", "websocket.max_page_size"),
        ("[websocket]\nmax_request_bytes = 10\n", "websocket.max_request_bytes"),
    ],
)
def test_capture_mistakes(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.toml")
    assert info.value.key == key


def test_dev_capture_config(tmp_path: Path) -> None:
    config = dev_config(tmp_path, capture_account="demo@example.test")
    assert config.capture.enabled and config.capture.fault_injection
    assert config.capture.account == "demo@example.test"
    assert not dev_config(tmp_path).capture.enabled
