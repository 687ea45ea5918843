"""Helpers shared by the store tests (imported as a plain module)."""

from __future__ import annotations

import uuid


def message(subject: str = "hello", body: bytes = b"Hi there.\r\n") -> bytes:
    return (
        b"From: carol@remote.test\r\nTo: alice@example.test\r\n"
        + b"Subject: "
        + subject.encode()
        + b"\r\nMessage-ID: <"
        + uuid.uuid4().hex.encode()
        + b"@remote.test>\r\n\r\n"
        + body
    )
