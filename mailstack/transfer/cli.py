"""``mailstack import ...`` and ``mailstack export ...`` (registered by cli.py).

Ctrl-C once stops at the next message boundary and prints the summary
(exit status 130; running the same command again continues); a second
Ctrl-C stops at once.  Messages that could not be imported (or lost
something in an export) are listed on stderr and make the exit status 1.
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio

from mailstack.cli import CliError, _check_database_exists, read_password
from mailstack.config import Config
from mailstack.store.store import Store, open_store
from mailstack.transfer import export, imap_import, maildir, mbox
from mailstack.transfer.importer import import_folders
from mailstack.transfer.progress import Progress, Summary
from mailstack.transfer.source import SourceFolder, SourceUnreadable

P = TypeVar("P", bound=argparse.ArgumentParser)
Job = Callable[[Store, int, trio.Event], Awaitable[Summary]]


async def _watch_interrupt(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()
            print("stopping after the current batch (Ctrl-C again to abort)", file=sys.stderr)


async def _run_job(config: Config, address: str, job: Job) -> Summary:
    async with open_store(config) as store:
        account = await store.get_account(address)
        if account is None:
            raise CliError(f"no such account: {address}")
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_interrupt, stop)
            summary = await job(store, account.id, stop)
            nursery.cancel_scope.cancel()
    return summary


def _run(config: Config, address: str, job: Job) -> None:
    _check_database_exists(config)
    summary = trio.run(_run_job, config, address, job)
    if summary.interrupted:
        raise KeyboardInterrupt
    if summary.errors:
        raise CliError(f"{len(summary.errors)} problems, listed above")


def _import_job(list_folders: Callable[[], list[SourceFolder]]) -> Job:
    async def job(store: Store, account_id: int, stop: trio.Event) -> Summary:
        try:
            folders = await trio.to_thread.run_sync(list_folders)
        except (SourceUnreadable, OSError) as exc:
            raise CliError(str(exc)) from None
        totals = [f.total for f in folders]
        total = None if None in totals else sum(t or 0 for t in totals)
        progress = Progress("imported", total=total)
        try:
            return await import_folders(store, account_id, folders, progress, stop)
        finally:
            progress.close()

    return job


def cmd_import_maildir(config: Config, args: argparse.Namespace) -> None:
    path = Path(args.path)
    _run(config, args.address, _import_job(lambda: maildir.folders(path)))


def cmd_import_imap(config: Config, args: argparse.Namespace) -> None:
    try:
        url = imap_import.parse_url(args.source_url)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    password = read_password(f"Password of {url.user} at {url.host}: ")
    try:
        context = ssl.create_default_context(cafile=args.ca_file)
    except OSError as exc:
        raise CliError(f"cannot read --ca-file: {exc}") from None

    async def job(store: Store, account_id: int, stop: trio.Event) -> Summary:
        progress = Progress("imported")
        try:
            return await imap_import.import_from_imap(
                store, account_id, url, password, context, progress, stop
            )
        except imap_import.ImapSourceError as exc:
            raise CliError(str(exc)) from None
        finally:
            progress.close()

    _run(config, args.address, job)


def cmd_import_mbox(config: Config, args: argparse.Namespace) -> None:
    path = Path(args.file)
    _run(
        config,
        args.address,
        _import_job(lambda: mbox.folders(path, args.folder, args.variant)),
    )


ExportFn = Callable[[Store, int, Path, Progress, trio.Event], Awaitable[Summary]]


def _export_job(write: ExportFn, path: Path) -> Job:
    async def job(store: Store, account_id: int, stop: trio.Event) -> Summary:
        try:
            export.check_destination(path)
        except export.ExportError as exc:
            raise CliError(str(exc)) from None
        progress = Progress("exported")
        progress.summary.resume_hint = f"{path} is incomplete: remove it and export again"
        try:
            return await write(store, account_id, path, progress, stop)
        finally:
            progress.close()

    return job


def cmd_export(config: Config, args: argparse.Namespace) -> None:
    write: ExportFn = export.export_maildir if args.format == "maildir" else export.export_mbox
    _run(config, args.address, _export_job(write, Path(args.path)))


def add_commands(commands: argparse._SubParsersAction[P]) -> None:
    imports = commands.add_parser("import", help="import mail from Maildir, mbox or IMAP")
    kinds = imports.add_subparsers(dest="source", required=True, metavar="SOURCE")
    resumable = "A second run imports only what is new (matched by Message-ID and size)."

    p = kinds.add_parser(
        "maildir",
        help="import a Maildir / Maildir++ / Dovecot tree",
        description=f"Import every folder of a Maildir tree with its flags. {resumable}",
    )
    p.add_argument("address", metavar="ADDRESS", help="the account to import into")
    p.add_argument("path", metavar="PATH", help="the Maildir root (holding cur/ and new/)")
    p.set_defaults(func=cmd_import_maildir)

    p = kinds.add_parser(
        "mbox",
        help="import an mbox file (or a directory of *.mbox files)",
        description=f"Import mboxrd/mboxo with Status/X-Status flags. {resumable}",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("file", metavar="FILE", help="an mbox file, or a directory of *.mbox files")
    p.add_argument("--folder", metavar="NAME", help="target folder (default: from the file name)")
    p.add_argument(
        "--variant",
        choices=("mboxrd", "mboxo"),
        default="mboxrd",
        help="how body lines starting 'From ' were quoted (default: mboxrd)",
    )
    p.set_defaults(func=cmd_import_mbox)

    p = kinds.add_parser(
        "imap",
        help="copy every folder from another IMAP server",
        description=(
            "Copy every folder with flags and internal dates from an IMAP server over TLS; "
            "the password is read from stdin (prompted on a terminal). " + resumable
        ),
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--from",
        dest="source_url",
        required=True,
        metavar="URL",
        help="imaps://user@host[:port] (TLS) or imap://user@host[:port] (STARTTLS)",
    )
    p.add_argument("--ca-file", metavar="FILE", help="trust this CA (default: the system's)")
    p.set_defaults(func=cmd_import_imap)

    exports = commands.add_parser("export", help="export an account's mail")
    formats = exports.add_subparsers(dest="format", required=True, metavar="FORMAT")
    p = formats.add_parser(
        "maildir",
        help="as a Dovecot-compatible Maildir++ tree",
        description="Write every folder with flags, keywords, UIDs and internal dates.",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("path", metavar="PATH", help="a new or empty directory")
    p.set_defaults(func=cmd_export)
    p = formats.add_parser(
        "mbox",
        help="as mboxrd files, one per folder",
        description="Write PATH/Folder.mbox, PATH/Folder/Sub.mbox, ... with Status flags.",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("path", metavar="PATH", help="a new or empty directory")
    p.set_defaults(func=cmd_export)
