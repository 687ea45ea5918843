"""The pytest example of the README section "Using mailstack as a test mail
server", run as written against a capture server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.integration.conftest import StackFactory

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def example_code() -> str:
    section = README.split("## Using mailstack as a test mail server", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


async def test_readme_capture_example(
    stack_factory: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(30):
        stack = await stack_factory(
            services=("smtp", "websocket"),
            capture={"enabled": True, "account": "alice@example.test"},
        )
        host, port = stack.addr("websocket")
        monkeypatch.setenv("MAILSTACK_WS_URL", f"ws://{host}:{port}/")
        monkeypatch.setenv("MAILSTACK_SMTP_PORT", str(stack.addr("smtp")[1]))
        monkeypatch.setenv("MAILSTACK_USER", "alice@example.test")
        monkeypatch.setenv("MAILSTACK_PASSWORD", "alice-password")
        namespace: dict[str, Any] = {}
        exec(compile(example_code(), "README.md example", "exec"), namespace)
        await namespace["test_signup_sends_a_welcome_mail"]()
