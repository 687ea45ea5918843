"""Pruning of the expunge history QRESYNC reads (``[imap] expunged_retention_days``).

Runs as one task of the IMAP service: every IMAP process prunes, which is
harmless (the deletes are idempotent and each raises a mailbox's
``expunge_log_floor`` only upwards, in the same transaction).  What a client
older than the kept history is told is explained in ``condstore.py``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import trio

from mailstack.store.records import StoreError
from mailstack.store.store import Store

log = logging.getLogger("mailstack.imap")

# Often enough that the log stays near its retention, rarely enough to cost nothing.
PRUNE_INTERVAL_SECONDS = 3600.0


async def prune_forever(
    store: Store, retention_days: int, *, interval: float = PRUNE_INTERVAL_SECONDS
) -> None:
    """Prune now and then every ``interval`` seconds; 0 days keeps everything."""
    if retention_days == 0:
        return
    cursor = 0  # change-log rows up to here were looked at already
    while True:
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        try:
            removed, cursor = await store.prune_expunge_log(cutoff, after_id=cursor)
        except StoreError as exc:
            log.warning("imap expunge history pruning failed: %s", exc)
        else:
            if removed:
                log.info("imap pruned %d expunge records older than %s", removed, cutoff)
        await trio.sleep(interval)
