"""Store what a reader yields, in order, through the store's group commit.

Per folder, one task pulls batches from the reader in a worker thread while
the previous batch is being committed by ``Store.append_many`` (one
group-commit item per batch), so reading, parsing and the fsync overlap and
the folder keeps its order (UIDs ascend in source order).  Every batch is
one transaction: stopping (Ctrl-C sets ``stop``) takes effect between
batches, i.e. at a message boundary, and a re-run skips what is already in
the mailbox (``source.Deduper``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import trio

from mailstack.store.imports import ImportMessage
from mailstack.store.records import AlreadyExists, MailboxRecord, StoreError
from mailstack.store.store import Store
from mailstack.transfer.progress import MIB, Progress, Summary
from mailstack.transfer.source import (
    Deduper,
    DedupKey,
    Duplicate,
    SourceError,
    SourceFolder,
    SourceItem,
    SourceMessage,
    SourceUnreadable,
    key_for,
)

BATCH_MESSAGES = 1024
BATCH_BYTES = 16 * MIB
# Contents read at once when hashing existing messages without Message-ID.
READ_CHUNK = 64


async def ensure_mailbox(store: Store, account_id: int, name: str) -> MailboxRecord:
    mailbox = await store.get_mailbox(account_id, name)
    if mailbox is None:
        try:
            mailbox = await store.create_mailbox(account_id, name)
        except AlreadyExists:  # created meanwhile by a client
            mailbox = await store.get_mailbox(account_id, name)
            if mailbox is None:
                raise
    return mailbox


async def existing_keys(store: Store, mailbox_id: int) -> Counter[DedupKey]:
    counts: Counter[DedupKey] = Counter()
    without_id: list[int] = []
    for record in await store.list_messages(mailbox_id):
        message_id = record.headers.get("message-id", "")
        if "".join(message_id.split()):
            counts[key_for(message_id, record.size, None)] += 1
        else:
            without_id.append(record.content_id)
    for start in range(0, len(without_id), READ_CHUNK):
        chunk = without_id[start : start + READ_CHUNK]
        contents = await store.read_contents(chunk)
        for content_id in chunk:
            raw = contents.get(content_id)
            if raw is not None:
                counts[key_for(None, len(raw), raw)] += 1
    return counts


def _next_batch(items: Iterator[SourceItem]) -> list[SourceItem]:
    batch: list[SourceItem] = []
    size = 0
    for item in items:
        batch.append(item)
        if isinstance(item, SourceMessage):
            size += len(item.raw)
        if len(batch) >= BATCH_MESSAGES or size >= BATCH_BYTES:
            break
    return batch


async def _store_batch(
    store: Store, mailbox_id: int, batch: list[SourceItem], progress: Progress, keep_uids: bool
) -> None:
    messages = []
    for item in batch:
        if isinstance(item, Duplicate):
            progress.duplicates(1)
        elif isinstance(item, SourceError):
            progress.error(item.label, item.reason)
        else:
            messages.append(item)
    if not messages:
        return
    results = await store.append_many(
        mailbox_id,
        [
            ImportMessage(
                m.raw, m.flags, m.internal_date.replace(microsecond=0), m.uid if keep_uids else None
            )
            for m in messages
        ],
    )
    count = size = 0
    for message, result in zip(messages, results, strict=True):
        if isinstance(result, StoreError):
            progress.error(message.label, str(result))
        else:
            count += 1
            size += len(message.raw)
    progress.add(count, size)


async def import_folder(
    store: Store, mailbox_id: int, folder: SourceFolder, progress: Progress, stop: trio.Event
) -> None:
    keep_uids = folder.uidvalidity is not None and await store.adopt_uidvalidity(
        mailbox_id, folder.uidvalidity
    )
    deduper = Deduper(await existing_keys(store, mailbox_id))
    send, receive = trio.open_memory_channel[list[SourceItem]](1)

    async def produce() -> None:
        async with send:
            items = await trio.to_thread.run_sync(folder.open, deduper)
            while not stop.is_set():
                try:
                    batch = await trio.to_thread.run_sync(_next_batch, items)
                except SourceUnreadable as exc:
                    progress.error(f"folder {folder.name}", str(exc))
                    return
                if not batch:
                    return
                await send.send(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async with receive:
            async for batch in receive:
                await _store_batch(store, mailbox_id, batch, progress, keep_uids)


async def import_folders(
    store: Store,
    account_id: int,
    folders: Sequence[SourceFolder],
    progress: Progress,
    stop: trio.Event,
) -> Summary:
    """Import every folder; returns the progress summary (not yet printed)."""
    for folder in folders:
        if stop.is_set():
            break
        progress.folder(folder.name)
        try:
            mailbox = await ensure_mailbox(store, account_id, folder.name)
        except StoreError as exc:
            progress.error(f"folder {folder.name!r}", str(exc))
            continue
        await import_folder(store, mailbox.id, folder, progress, stop)
    progress.summary.interrupted = stop.is_set()
    return progress.summary
