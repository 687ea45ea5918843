"""Garbage-collector settings for the long-running processes (servers and
the writer process).

Why: nearly every object a session creates (trio tasks, cancel scopes,
replies, parsed commands) is freed by reference counting the moment the
session ends; the cyclic collector finds almost nothing.  Measured on the
SMTP listener (bench/smtp_bench.py, 10,000 one-message sessions): at
CPython's default threshold of 700 new objects the young generation was
collected 340 times, and each full collection walked the ~107,000 objects
left from imports and startup, pausing every session for about 60 ms; in
all about 5% of the listener's CPU.

So, once startup is over, the objects that exist then are frozen (moved to
a generation the collector never scans, ``gc.freeze``) and a young
collection waits for ten times as many new objects.  Cycles are still
collected, only later: a few thousand more objects at most.
"""

from __future__ import annotations

import gc

# New container objects (allocations minus frees) before a young
# collection; CPython's default is 700.
YOUNG_THRESHOLD = 7000


def settle_after_startup() -> None:
    """Call once the process has imported and set up what it keeps for its
    lifetime (bound listeners, open store)."""
    gc.collect()  # leave startup's own garbage out of the frozen set
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
