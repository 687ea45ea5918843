"""Process helpers for tests that start, signal and wait for real processes."""

from __future__ import annotations

import os


def process_exists(pid: int) -> bool:
    """True while ``pid`` names a process (a zombie counts until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
