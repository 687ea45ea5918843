"""Maildir and mbox details: names, flags, uidlists, quoting, dates, state fields."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailstack.transfer import maildir, mbox
from mailstack.transfer.source import (
    Deduper,
    SourceError,
    SourceMessage,
    key_of,
    message_id_of,
    to_crlf,
)


@pytest.mark.parametrize(
    ("name", "directory"),
    [
        ("Work/Projects", ".Work.Projects"),
        ("Café", ".Caf&AOk-"),
        ("Tom & Jerry", ".Tom &- Jerry"),
        ("v1.2/a\\b", ".v1\\2e2.a\\5cb"),
        ("日本語", ".&ZeVnLIqe-"),
    ],
)
def test_folder_names_round_trip(name: str, directory: str) -> None:
    assert maildir.folder_dir_name(name) == directory
    levels = directory[1:].split(".")
    assert "/".join(maildir.decode_level(level) for level in levels) == name


def test_undecodable_level_is_kept_as_utf8() -> None:
    # Dovecot's UTF-8 option writes names unencoded.
    assert maildir.decode_level("Entwürfe") == "Entwürfe"
    assert maildir.decode_level("a&b") == "a&b"  # not valid modified UTF-7


def test_info_letters_both_ways() -> None:
    keywords = {"a": "$Junk", "c": "Urgent"}
    flags = maildir.flags_from_info("DFPRSTac", keywords)
    assert flags == {
        "\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted", "$Junk", "Urgent"
    }  # fmt: skip
    letters = {kw: letter for letter, kw in keywords.items()}
    assert maildir.info_from_flags(frozenset(flags), letters) == "DFPRSTac"
    # An unknown keyword letter (no dovecot-keywords entry) is ignored.
    assert maildir.flags_from_info("Sz", keywords) == {"\\Seen"}


def test_keywords_and_uidlist_files(tmp_path: Path) -> None:
    (tmp_path / "dovecot-keywords").write_text("0 $Junk\n2 Urgent\n30 too-far\nbad line\n")
    assert maildir.read_keywords(tmp_path) == {"a": "$Junk", "c": "Urgent"}
    (tmp_path / "dovecot-uidlist").write_text(
        "3 V1234 N9 G0123abcd\n5 :1700.M1P1.host,S=10\n7 W120 :1701.M2P1.host:2,S\n"
    )
    assert maildir.read_uidlist(tmp_path) == maildir.Uidlist(
        1234, 9, {"1700.M1P1.host,S=10": 5, "1701.M2P1.host": 7}
    )
    (tmp_path / "dovecot-uidlist").write_text("1 1234 9\n3 1700.M1P1.host\n")
    assert maildir.read_uidlist(tmp_path) == maildir.Uidlist(1234, 9, {"1700.M1P1.host": 3})
    (tmp_path / "dovecot-uidlist").write_text("garbage\n")
    assert maildir.read_uidlist(tmp_path) == maildir.Uidlist()
    (tmp_path / "dovecot-uidlist").unlink()
    assert maildir.read_uidlist(tmp_path) == maildir.Uidlist()


def test_fs_layout_and_uidlist_order(tmp_path: Path) -> None:
    for folder in (tmp_path, tmp_path / "Lists" / "Python"):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
    (tmp_path / "cur" / "b:2,S").write_bytes(b"Subject: b\n\nb\n")
    (tmp_path / "cur" / "a:2,").write_bytes(b"Subject: a\n\na\n")
    (tmp_path / "dovecot-uidlist").write_text("3 V1 N3\n1 :b\n2 :a\n")
    (tmp_path / "new" / "c").write_bytes(b"Subject: c\n\nc\n")
    found = maildir.folders(tmp_path)
    assert [(f.name, f.uidvalidity, f.total) for f in found] == [
        ("INBOX", 1, 3),
        ("Lists/Python", None, 0),
    ]
    items = list(found[0].open(Deduper(Counter())))
    assert [(i.raw, i.uid) for i in items if isinstance(i, SourceMessage)] == [
        (b"Subject: b\r\n\r\nb\r\n", 1),
        (b"Subject: a\r\n\r\na\r\n", 2),
        (b"Subject: c\r\n\r\nc\r\n", 3),  # not in the uidlist yet: N3 is next
    ]


def test_not_a_maildir(tmp_path: Path) -> None:
    with pytest.raises(maildir.MaildirError, match="no Maildir"):
        maildir.folders(tmp_path)
    with pytest.raises(maildir.MaildirError, match="not a directory"):
        maildir.folders(tmp_path / "missing")


def test_to_crlf() -> None:
    assert to_crlf(b"a\nb\r\nc\rd\n") == b"a\r\nb\r\nc\rd\r\n"
    assert to_crlf(b"a\r\nb\r\n") == b"a\r\nb\r\n"
    assert to_crlf(b"\r\r\n") == b"\r\r\n"


def test_message_id_matches_what_the_store_keeps() -> None:
    folded = b"Subject: x\r\nMessage-Id:\r\n  <a@b>\r\nMessage-ID: <c@d>\r\n\r\n"
    assert message_id_of(folded) == "<a@b>"
    assert message_id_of(b"Subject: x\n\nMessage-ID: <in-body>\n") is None
    assert message_id_of(b"message-id : <x@y> \n\n") == "<x@y>"
    same_id_other_size = (
        key_of(b"Message-ID: <a@b>\r\n\r\nxx"),
        key_of(b"Message-ID: <a@b>\r\n\r\nx"),
    )
    assert same_id_other_size[0] != same_id_other_size[1]
    assert key_of(b"no id") == key_of(b"no id") != key_of(b"no id!")


def test_deduper_counts_copies() -> None:
    key = key_of(b"Message-ID: <a@b>\r\n\r\n")
    deduper = Deduper(Counter({key: 1}))
    assert deduper.claim(key) is True
    assert deduper.claim(key) is False  # a second copy in the source is new


# -- mbox -------------------------------------------------------------------------

MBOXRD = (
    b"From alice@example.org Mon Jan  1 10:00:00 2024\n"
    b"Subject: one\n"
    b"Status: RO\n"
    b"X-Status: AF\n"
    b"X-Keywords: $Label1, project-x\n"
    b"X-UID: 7\n"
    b"\n"
    b">From the start\n"
    b">>From quoted once\n"
    b"From inside, not after an empty line\n"
    b"\n"
    b"From bob@example.org Tue Feb  2 11:22:33 2024 +0100\n"
    b"Subject: two\n"
    b"X-Status: TD\n"
    b"\n"
    b"body\n"
    b"\n"
)


def read(data: bytes, variant: mbox.Variant = "mboxrd") -> list[SourceMessage]:
    items = list(mbox.read_messages(io.BytesIO(data), "test.mbox", variant))
    assert all(isinstance(i, SourceMessage) for i in items)
    return [i for i in items if isinstance(i, SourceMessage)]


def test_mboxrd_messages_flags_and_dates() -> None:
    one, two = read(MBOXRD)
    assert one.raw == (
        b"Subject: one\r\n\r\nFrom the start\r\n>From quoted once\r\n"
        b"From inside, not after an empty line\r\n"
    )
    assert one.flags == {"\\Seen", "\\Answered", "\\Flagged", "$Label1", "project-x"}
    assert one.internal_date == datetime(2024, 1, 1, 10, 0, 0, tzinfo=UTC)
    assert two.raw == b"Subject: two\r\n\r\nbody\r\n"
    assert two.flags == {"\\Draft", "\\Deleted"}
    assert two.internal_date == datetime(2024, 2, 2, 11, 22, 33, tzinfo=UTC)
    assert two.label == "test.mbox message 2"


def test_crlf_mbox() -> None:
    data = MBOXRD.replace(b"\nbody\n", b"\nbody\nStatus: a body line, not a field\n")
    one, two = read(data.replace(b"\n", b"\r\n"))
    assert one.raw.endswith(b"\r\nFrom inside, not after an empty line\r\n")
    assert two.raw == b"Subject: two\r\n\r\nbody\r\nStatus: a body line, not a field\r\n"
    assert two.flags == {"\\Draft", "\\Deleted"}


def test_mboxo_unquotes_only_one_level() -> None:
    (one, _) = read(MBOXRD, "mboxo")
    assert b"\r\nFrom the start\r\n>>From quoted once\r\n" in one.raw


def test_uw_imap_pseudo_message_is_skipped_and_date_header_is_the_fallback() -> None:
    data = (
        b"From MAILER-DAEMON Mon Jan  1 10:00:00 2024\n"
        b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
        b"X-IMAP: 1234 0000000002\n\nstate\n\n"
        b"From someone bad-date\n"
        b"Date: Wed, 3 Mar 2021 04:05:06 +0200\n\nx\n"
    )
    (only,) = read(data)
    assert only.internal_date == datetime(2021, 3, 3, 2, 5, 6, tzinfo=UTC)


def test_not_an_mbox() -> None:
    with pytest.raises(mbox.MboxError, match="not an mbox"):
        read(b"Subject: plain message\n\nbody\n")
    assert read(b"") == []


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: x\r\n\r\nFrom me\r\n>From you\r\n>>From them\r\n",
        b"Subject: no body\r\n",
        b"header only, no newline",
        b"Subject: x\r\n\r\nno final newline",
        b"Subject: x\r\n\r\n\r\n\r\nblank lines\r\n\r\n",
    ],
)
@pytest.mark.parametrize(
    "flags",
    [frozenset(), frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted", "$X"})],
)
def test_format_then_read_round_trip(raw: bytes, flags: frozenset[str]) -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    data = mbox.format_message(raw, flags, when) + mbox.format_message(raw, flags, when)
    messages = read(data)
    assert len(messages) == 2
    for message in messages:
        if raw.endswith(b"\n"):  # mbox cannot mark a missing final newline
            assert message.raw == raw
        else:
            assert message.raw == raw + b"\r\n"
        assert message.flags == flags
        assert message.internal_date == when


def test_export_paths_escape_levels(tmp_path: Path) -> None:
    assert mbox.export_path(tmp_path, "A/B") == tmp_path / "A" / "B.mbox"
    assert mbox.export_path(tmp_path, "../x%") == tmp_path / "%2E./x%25.mbox"
    for name in ("A/B", "../x%", ".hidden", "INBOX"):
        path = mbox.export_path(tmp_path, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"From x Mon Jan  1 10:00:00 2024\nSubject: s\n\nb\n")
    names = sorted(f.name for f in mbox.folders(tmp_path, None))
    assert names == ["../x%", ".hidden", "A/B", "INBOX"]
    assert [f.name for f in mbox.folders(tmp_path / "INBOX.mbox", "Old/Inbox")] == ["Old/Inbox"]


def test_unreadable_mbox_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "gone.mbox"
    path.write_bytes(b"From x Mon Jan  1 10:00:00 2024\n\nb\n")
    (folder,) = mbox.folders(path, None)
    assert folder.name == "gone"
    path.unlink()
    (item,) = folder.open(Deduper(Counter()))
    assert isinstance(item, SourceError) and item.label == str(path)
    with pytest.raises(mbox.MboxError, match="does not exist"):
        mbox.folders(path, None)
