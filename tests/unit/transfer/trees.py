"""Generated mail trees for the transfer tests."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mailstack.store.store import Store

BIG = 10 * 1024 * 1024
# A Dovecot-style folder list: store name -> Maildir++ directory.
FOLDERS = {
    "INBOX": "",
    "Work": ".Work",
    "Work/Projects": ".Work.Projects",
    "Café": ".Caf&AOk-",
    "Entwürfe/Ärger": ".Entw&APw-rfe.&AMQ-rger",
    "v1.2": ".v1\\2e2",
}
KEYWORDS = ["$Junk", "project-x", "Urgent"]


def message(n: int, *, subject: str = "hello", body: bytes = b"", lf: bool = True) -> bytes:
    eol = b"\n" if lf else b"\r\n"
    lines = [
        f"From: Sender {n} <sender{n}@example.org>".encode(),
        b"To: alice@example.test",
        f"Subject: {subject} {n}".encode(),
        f"Message-ID: <msg{n}@example.org>".encode(),
        b"Date: Mon, 1 Jan 2024 10:00:00 +0000",
        b"",
        f"Body of message {n}.".encode(),
        b"From here on a line starts with From (mbox must quote it).",
        b">From already quoted once.",
    ]
    return eol.join(lines) + eol + body


@dataclass
class Expected:
    folder: str
    flags: frozenset[str]
    mtime: int


def write_maildir(root: Path) -> dict[str, list[Expected]]:
    """A Dovecot Maildir++ tree; returns what each folder should import."""
    expected: dict[str, list[Expected]] = {name: [] for name in FOLDERS}
    for dirname in FOLDERS.values():
        folder = root / dirname if dirname else root
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "dovecot-keywords").write_text(
            "".join(f"{i} {kw}\n" for i, kw in enumerate(KEYWORDS))
        )
    n = 0

    def put(name: str, data: bytes, info: str | None, flags: frozenset[str]) -> None:
        nonlocal n
        n += 1
        folder = root / FOLDERS[name] if FOLDERS[name] else root
        base = f"{1700000000 + n}.M{n}P1.host,S={len(data)}"
        path = (
            folder
            / ("new" if info is None else "cur")
            / (base if info is None else f"{base}:2,{info}")
        )
        path.write_bytes(data)
        mtime = 1700000000 + 3600 * n
        os.utime(path, (mtime, mtime))
        expected[name].append(Expected(name, flags, mtime))

    put("INBOX", message(1), "S", frozenset({"\\Seen"}))
    put("INBOX", message(2), "RS", frozenset({"\\Answered", "\\Seen"}))
    put("INBOX", message(3), "F", frozenset({"\\Flagged"}))
    put("INBOX", message(4), "T", frozenset({"\\Deleted"}))
    put("INBOX", message(5), "D", frozenset({"\\Draft"}))
    put("INBOX", message(6), "P", frozenset({"$Forwarded"}))
    put(
        "INBOX",
        message(7),
        "DFPRSTabc",
        frozenset(
            {"\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted", *KEYWORDS}
        ),
    )
    put("INBOX", message(8), None, frozenset())  # new/: no flags
    put("Work", message(9, lf=False), "b", frozenset({"project-x"}))
    put(
        "Work/Projects",
        message(10, subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?="),
        "S",
        frozenset({"\\Seen"}),
    )
    put("Café", message(11), "", frozenset())
    put("Entwürfe/Ärger", message(12), "S", frozenset({"\\Seen"}))
    put("v1.2", message(13), "", frozenset())
    big = message(14, body=(b"x" * 1023 + b"\n") * (BIG // 1024))
    put("Work", big, "S", frozenset({"\\Seen"}))
    # Malformed: no header at all, NUL bytes, a bare CR; imported as-is.
    put("Work", b"\x00\x01garbage without any header\rline\n", "", frozenset())
    # A message without Message-ID (deduplicated by content).
    put("INBOX", b"Subject: no id\n\nplain\n", "S", frozenset({"\\Seen"}))
    # Unreadable: reported by file name and skipped.
    (root / "cur" / "1700009999.dangling:2,S").symlink_to(root / "missing-target")
    (root / "cur" / "1700009998.empty:2,S").write_bytes(b"")
    return expected


async def snapshot(store: Store, address: str) -> dict[str, list[tuple[str, frozenset[str], int]]]:
    """folder -> [(sha256 of content, flags, internal date)] in UID order."""
    account = await store.get_account(address)
    assert account is not None
    result = {}
    for mailbox in await store.list_mailboxes(account.id):
        records = await store.list_messages(mailbox.id)
        contents = await store.read_contents([r.content_id for r in records])
        result[mailbox.name] = [
            (
                hashlib.sha256(contents[r.content_id]).hexdigest(),
                r.flags,
                int(r.internal_date.timestamp()),
            )
            for r in records
        ]
    return result
