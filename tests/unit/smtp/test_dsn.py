"""Delivery status notifications (RFC 3464) parse back as they should."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from mailstack.smtp.dsn import RecipientReport, build_dsn, header_block, status_of
from mailstack.smtp.replies import Reply

ORIGINAL = b"From: alice@example.test\r\nSubject: report me\r\n\r\nsecret body\r\n"


def dsn(delayed: bool = False) -> email.message.Message:
    raw = build_dsn(
        reporting_mta="mail.example.test",
        recipient="alice@example.test",
        original=ORIGINAL,
        reports=[
            RecipientReport(
                "x@remote.test",
                "5.1.1",
                "550 5.1.1 no such user",
                "550 5.1.1 no such user",
                "mx.remote.test",
            ),
            RecipientReport("j\u00f6rg@remote.test", "5.1.10", "null MX"),
        ],
        arrival=datetime(2026, 11, 29, tzinfo=UTC),
        now=datetime(2026, 11, 29, 1, tzinfo=UTC),
        delayed=delayed,
    )
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_multipart_report_with_delivery_status() -> None:
    report = dsn()
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["To"] == "alice@example.test"
    text, status, headers = report.get_payload()  # type: ignore[misc]
    assert text.get_content_type() == "text/plain"
    assert "<x@remote.test>: 550 5.1.1 no such user" in text.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, first, second = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mail.example.test"
    assert first["Final-Recipient"] == "rfc822; x@remote.test"
    assert first["Action"] == "failed" and first["Status"] == "5.1.1"
    assert first["Remote-MTA"] == "dns; mx.remote.test"
    assert first["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    # RFC 6533: a non-ASCII address is typed utf-8; no diagnostic without a remote reply.
    assert second["Final-Recipient"].startswith("utf-8; ")
    assert second["Diagnostic-Code"] is None
    assert headers.get_content_type() == "text/rfc822-headers"
    returned = headers.get_payload()
    assert "Subject: report me" in returned and "secret body" not in returned


def test_delay_warning() -> None:
    report = dsn(delayed=True)
    _, status, _ = report.get_payload()  # type: ignore[misc]
    assert status.get_payload()[1]["Action"] == "delayed"


def test_status_and_header_helpers() -> None:
    assert status_of(Reply(550, "5.7.1", "no")) == "5.7.1"
    assert status_of(Reply(451, None, "later")) == "4.0.0"
    assert header_block(ORIGINAL) == b"From: alice@example.test\r\nSubject: report me\r\n"


def test_utf8_returned_header_is_sent_as_8bit() -> None:
    raw = build_dsn(
        reporting_mta="mail.example.test",
        recipient="alice@example.test",
        original="Subject: caf\u00e9\r\n\r\nbody\r\n".encode(),
        reports=[RecipientReport("x@old.test", "5.6.3", "needs 8BITMIME")],
        arrival=datetime(2026, 11, 29, tzinfo=UTC),
        now=datetime(2026, 11, 29, 1, tzinfo=UTC),
    )
    report = email.message_from_bytes(raw, policy=email.policy.default)
    headers = report.get_payload()[2]  # type: ignore[index]
    assert headers["Content-Transfer-Encoding"] == "8bit"
    assert "caf\u00e9" in headers.get_content()
