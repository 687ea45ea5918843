"""Write an account's mail out as a Maildir++ tree or as mbox files.

Maildir: Dovecot-compatible (``.Folder.Sub`` directories, ``maildirfolder``
markers, ``:2,`` flags, ``dovecot-keywords`` letters, a v3
``dovecot-uidlist`` carrying our UIDs and UIDVALIDITY, mtime = internal
date); message files hold the stored bytes exactly.  mbox: one mboxrd file
per folder (``mbox.export_path``).  Contents are read in chunks
(``Store.read_contents``) and written in a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from mailstack.store.records import MailboxRecord, MessageRecord
from mailstack.store.store import Store
from mailstack.transfer import maildir, mbox
from mailstack.transfer.progress import MIB, Progress, Summary

READ_MESSAGES = 128
READ_BYTES = 16 * MIB


class ExportError(Exception):
    """The destination cannot be used."""


def check_destination(path: Path) -> None:
    """Refuse to mix an export into existing files."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ExportError(f"{path} exists and is not an empty directory")


def _chunks(records: Sequence[MessageRecord]) -> list[list[MessageRecord]]:
    chunks: list[list[MessageRecord]] = []
    size = 0
    for record in records:
        if not chunks or len(chunks[-1]) >= READ_MESSAGES or size >= READ_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(record)
        size += record.size
    return chunks


# Writes one chunk of (record, content) pairs; returns the error lines.
ChunkWriter = Callable[[list[tuple[MessageRecord, bytes]]], list[str]]


async def _export(
    store: Store,
    account_id: int,
    progress: Progress,
    stop: trio.Event,
    open_folder: Callable[[MailboxRecord, list[MessageRecord]], ChunkWriter],
) -> Summary:
    mailboxes = sorted(await store.list_mailboxes(account_id), key=lambda m: m.name)
    progress.set_total(sum(m.messages for m in mailboxes))
    for mailbox in mailboxes:
        if stop.is_set():
            break
        progress.folder(mailbox.name)
        records = await store.list_messages(mailbox.id)
        write = await trio.to_thread.run_sync(open_folder, mailbox, records)
        for chunk in _chunks(records):
            if stop.is_set():
                break
            contents = await store.read_contents([r.content_id for r in chunk])
            pairs = []
            for record in chunk:
                raw = contents.get(record.content_id)
                if raw is None:  # expunged meanwhile
                    continue
                pairs.append((record, raw))
            for line in await trio.to_thread.run_sync(write, pairs):
                progress.error(f"folder {mailbox.name!r}", line, skipped=False)
            progress.add(len(pairs), sum(len(raw) for _, raw in pairs))
    progress.summary.interrupted = stop.is_set()
    return progress.summary


# -- Maildir ------------------------------------------------------------------------


def _open_maildir_folder(
    root: Path, mailbox: MailboxRecord, records: list[MessageRecord]
) -> tuple[ChunkWriter, list[str]]:
    folder = root if mailbox.name == "INBOX" else root / maildir.folder_dir_name(mailbox.name)
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    if folder != root:
        (folder / "maildirfolder").touch()
    keywords = sorted(
        {f for r in records for f in r.flags if not f.startswith("\\")} - {"$Forwarded"}
    )
    letters = {
        kw: chr(ord("a") + i) for i, kw in enumerate(keywords[: maildir.MAX_KEYWORD_LETTERS])
    }
    for lost in keywords[maildir.MAX_KEYWORD_LETTERS :]:
        problems.append(f"keyword {lost!r} not exported: Maildir has only 26 keyword letters")
    (folder / maildir.KEYWORDS_FILE).write_text(
        "".join(f"{ord(letter) - ord('a')} {kw}\n" for kw, letter in letters.items()),
        encoding="utf-8",
    )
    uidlist = folder / maildir.UIDLIST_FILE
    uidlist.write_text(f"3 V{mailbox.uidvalidity} N{mailbox.uidnext}\n", encoding="ascii")

    def write(pairs: list[tuple[MessageRecord, bytes]]) -> list[str]:
        lines = []
        for record, raw in pairs:
            stamp = int(record.internal_date.timestamp())
            base = f"{stamp}.M{record.uid}V{mailbox.uidvalidity}.mailstack,S={len(raw)}"
            info = maildir.info_from_flags(record.flags, letters)
            temporary = folder / "tmp" / base
            temporary.write_bytes(raw)
            os.utime(temporary, (stamp, stamp))
            # Maildir delivery: complete in tmp/, then one rename.
            os.rename(temporary, folder / "cur" / f"{base}{maildir.INFO_SEPARATOR}{info}")
            lines.append(f"{record.uid} :{base}\n")
        with uidlist.open("a", encoding="ascii") as f:
            f.writelines(lines)
        return []

    return write, problems


async def export_maildir(
    store: Store, account_id: int, root: Path, progress: Progress, stop: trio.Event
) -> Summary:
    check_destination(root)

    def open_folder(mailbox: MailboxRecord, records: list[MessageRecord]) -> ChunkWriter:
        write, problems = _open_maildir_folder(root, mailbox, records)
        pending = list(problems)

        def write_and_report(pairs: list[tuple[MessageRecord, bytes]]) -> list[str]:
            lines = pending + write(pairs)
            pending.clear()
            return lines

        return write_and_report

    return await _export(store, account_id, progress, stop, open_folder)


# -- mbox -----------------------------------------------------------------------------


async def export_mbox(
    store: Store, account_id: int, root: Path, progress: Progress, stop: trio.Event
) -> Summary:
    check_destination(root)

    def open_folder(mailbox: MailboxRecord, records: list[MessageRecord]) -> ChunkWriter:
        path = mbox.export_path(root, mailbox.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

        def write(pairs: list[tuple[MessageRecord, bytes]]) -> list[str]:
            with path.open("ab") as f:
                for record, raw in pairs:
                    f.write(mbox.format_message(raw, record.flags, record.internal_date))
            return []

        return write

    return await _export(store, account_id, progress, stop, open_folder)
