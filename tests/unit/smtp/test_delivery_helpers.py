"""The pure helpers of smtp/delivery.py (the store-facing parts are covered by
the integration tests against the real store)."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import pytest

from mailstack.smtp import commands
from mailstack.smtp.delivery import (
    Connection,
    RecipientCache,
    date_field,
    received_header,
    split_address,
    submission_fields,
)
from mailstack.smtp.protocol import MessageReceived, Recipient, Session

NOW = datetime(2026, 11, 29, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("alice@example.test", ("alice", "example.test")),
        ('"alice"@example.test', ("alice", "example.test")),
        ("victim%elsewhere.example@example.test", None),
        ("host!victim@example.test", None),
        ('"victim@elsewhere.example"@example.test', None),
    ],
)
def test_split_address_refuses_routing_hacks(
    address: str, expected: tuple[str, str] | None
) -> None:
    assert split_address(address) == expected


def test_recipient_cache_expires() -> None:
    cache = RecipientCache(ttl=5.0, max_entries=2)
    cache.put("a@x", (1,), now=0.0)
    assert cache.get("a@x", now=4.9) == (1,)
    assert cache.get("a@x", now=5.1) is None
    cache.put("b@x", (2,), now=0.0)
    cache.put("c@x", (3,), now=0.0)
    cache.put("d@x", (4,), now=0.0)  # full: emptied rather than growing
    assert cache.get("b@x", now=1.0) is None and cache.get("d@x", now=1.0) == (4,)


def test_date_field_is_the_rfc5322_date_of_that_second() -> None:
    # Cached per second: each call must still give its own second's date.
    for offset in (0.0, 0.4, 0.999, 1.0, 59.5, 86400.25):
        now = NOW + timedelta(seconds=offset)
        expected = email.utils.format_datetime(now.replace(microsecond=0))
        assert date_field(now) == expected
    assert date_field(NOW) == "Sun, 29 Nov 2026 03:00:00 +0000"


def test_submission_fields_added_only_when_missing() -> None:
    added = submission_fields(b"Subject: x\r\n\r\nbody\r\n", hostname="mx.test", now=NOW)
    assert added.startswith(b"Date: Sun, 29 Nov 2026 03:00:00 +0000\r\nMessage-ID: <")
    assert added.endswith(b"@mx.test>\r\n")
    present = b"date: Sun, 29 Nov 2026 03:00:00 +0000\r\nMessage-Id: <a@b>\r\n\r\nbody\r\n"
    assert submission_fields(present, hostname="mx.test", now=NOW) == b""
    # A "Date:" in the body does not count.
    body_only = b"Subject: x\r\n\r\nDate: not a header\r\n"
    assert submission_fields(body_only, hostname="mx.test", now=NOW).startswith(b"Date: ")


def test_submission_fields_match_whole_field_names() -> None:
    # "Date-Sent" and "Message-IDs" are other fields; blanks before the colon
    # (RFC 5322 4.5) still name the field.
    lookalikes = b"Date-Sent: x\r\nMessage-IDs: <a@b>\r\n\r\nbody\r\n"
    added = submission_fields(lookalikes, hostname="mx.test", now=NOW)
    assert added.startswith(b"Date: ") and b"\r\nMessage-ID: <" in added
    spaced = b"Date : Sun, 29 Nov 2026 03:00:00 +0000\r\nMessage-ID\t: <a@b>\r\n\r\n"
    assert submission_fields(spaced, hostname="mx.test", now=NOW) == b""


def test_received_header_mentions_tls_and_user() -> None:
    session = Session(tls=True, helo="client.example", esmtp=True, user="alice@example.test")
    event = MessageReceived(
        mail=commands.Mail(sender="alice@example.test"),
        recipients=(Recipient("bob@example.test", (2,)),),
        content=b"x\r\n",
        chunked=False,
    )
    connection = Connection("abcd1234", "192.0.2.7", "TLSv1.3", "TLS_AES_256_GCM_SHA384")
    header = received_header(session, connection, event, hostname="mx.test", now=NOW)
    assert header == (
        b"Received: from client.example ([192.0.2.7])\r\n"
        b"\tby mx.test (mailstack) with ESMTPSA id abcd1234\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        b"\t(authenticated as alice@example.test)\r\n"
        b"\tfor <bob@example.test>; Sun, 29 Nov 2026 03:00:00 +0000\r\n"
    )


def test_received_header_plain_helo() -> None:
    session = Session(tls=False, helo="old.example", esmtp=False)
    event = MessageReceived(
        mail=commands.Mail(sender=""),
        recipients=(Recipient("a@x.test", (1,)), Recipient("b@x.test", (2,))),
        content=b"",
        chunked=False,
    )
    header = received_header(
        session, Connection("s", "192.0.2.1", None, None), event, hostname="h", now=NOW
    )
    assert b"with SMTP id s\r\n" in header and b"for <" not in header
    assert header.endswith(b"\t; Sun, 29 Nov 2026 03:00:00 +0000\r\n")
