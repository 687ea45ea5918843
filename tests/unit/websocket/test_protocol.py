"""The WebSocket API's pure parts: request parsing with errors that echo the
id, Basic credentials from the handshake, event and summary shapes, and
capture routing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack import mime
from mailstack.capture.routing import CaptureRouter
from mailstack.config import CaptureConfig, CaptureInbox
from mailstack.store.records import Change, ChangeKind, MessageRecord
from mailstack.websocket import protocol as p
from mailstack.websocket import summary

LIMITS = p.Limits(max_page_size=100, max_wait_seconds=60)


def parse(body: object) -> p.Request:
    return p.parse_request(json.dumps(body), LIMITS)


def error(body: object) -> tuple[object, str]:
    with pytest.raises(p.RequestError) as info:
        p.parse_request(body if isinstance(body, str) else json.dumps(body), LIMITS)
    return info.value.request_id, info.value.code


def test_requests_with_defaults() -> None:
    assert parse({"id": 1, "type": "mailboxes"}).operation == p.Mailboxes()
    assert parse({"id": "a", "type": "messages"}).operation == p.Messages("INBOX", 0, 50)
    assert parse({"id": 2, "type": "messages", "limit": 1000}).operation == p.Messages(
        "INBOX", 0, 100
    )
    assert parse({"id": 3, "type": "message", "uid": 7}).operation == p.GetMessage("INBOX", 7, True)
    flags = parse({"id": 4, "type": "flags", "uids": [1, 2], "add": ["\\Seen"]}).operation
    assert flags == p.SetFlags("INBOX", (1, 2), ("\\Seen",), ())
    move = parse({"id": 5, "type": "move", "uid": 3, "to": "Archive", "mailbox": "X"})
    assert move.operation == p.Move("X", (3,), "Archive")
    wait = parse({"id": 6, "type": "wait", "to": "a@b", "since": "2026-01-02"}).operation
    assert isinstance(wait, p.Wait)
    assert wait.criteria.recipient == "a@b" and wait.timeout == p.DEFAULT_WAIT_SECONDS
    assert wait.criteria.since == datetime(2026, 1, 2, tzinfo=UTC)
    assert wait.after_uid is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{", (None, "bad_json")),
        ("[]", (None, "bad_request")),
        ({"id": [1], "type": "mailboxes"}, (None, "bad_request")),
        ({"id": 9}, (9, "bad_request")),
        ({"id": 9, "type": "nope"}, (9, "unknown_type")),
        ({"id": "x", "type": "message"}, ("x", "bad_request")),
        ({"id": 1, "type": "message", "uid": 0}, (1, "bad_request")),
        ({"id": 1, "type": "message", "uid": True}, (1, "bad_request")),
        ({"id": 1, "type": "flags", "uid": 1}, (1, "bad_request")),
        ({"id": 1, "type": "delete", "uids": []}, (1, "bad_request")),
        ({"id": 1, "type": "search", "since": "yesterday"}, (1, "bad_request")),
        ({"id": 1, "type": "search", "unseen": "yes"}, (1, "bad_request")),
        ({"id": 1, "type": "wait", "timeout": 61}, (1, "bad_request")),
        ({"id": 1, "type": "mailboxes", "mailbox": "INBOX"}, (1, "bad_request")),
    ],
)
def test_bad_requests_keep_their_id(body: object, expected: tuple[object, str]) -> None:
    assert error(body) == expected


@given(st.text())
def test_any_text_parses_or_is_a_request_error(text: str) -> None:
    try:
        p.parse_request(text, LIMITS)
    except p.RequestError as exc:
        assert exc.reply()["ok"] is False


def basic(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"x"), (b"authorization", value)]


def test_basic_credentials() -> None:
    user, password = p.basic_credentials([p.basic_authorization("ålice@x.test", "pa:ss")]) or (
        "",
        None,
    )
    assert user == "ålice@x.test" and password is not None and password.reveal() == "pa:ss"
    assert p.basic_credentials([]) is None
    assert p.basic_credentials(basic(b"Bearer abc")) is None
    assert p.basic_credentials(basic(b"Basic !!!")) is None
    assert p.basic_credentials(basic(b"Basic " + base64.b64encode(b"no-colon"))) is None
    assert p.basic_credentials(basic(b"Basic " + base64.b64encode(b":pw"))) is None


RAW = (
    b"From: =?utf-8?q?J=C3=B6rg?= <jorg@a.example>\r\nTo: x@b.example, Group: y@c.example;\r\n"
    b"Subject: hi\r\nDate: Tue, 3 Feb 2026 10:00:00 +0100\r\n\r\nbody\r\n"
)


def record(raw: bytes = RAW, flags: frozenset[str] = frozenset()) -> MessageRecord:
    analysis = mime.analyze(raw)
    return MessageRecord(
        id=1,
        mailbox_id=2,
        uid=7,
        modseq=3,
        flags=flags,
        internal_date=datetime(2026, 2, 3, 9, 0, 1, tzinfo=UTC),
        size=len(raw),
        content_id=5,
        envelope=analysis.envelope,
        bodystructure=analysis.bodystructure,
        headers=analysis.headers,
    )


def test_message_summary() -> None:
    assert summary.message_summary(record(), "INBOX") == {
        "mailbox": "INBOX",
        "uid": 7,
        "from": "jorg@a.example",
        "to": ["x@b.example", "y@c.example"],
        "cc": [],
        "subject": "hi",
        "date": "2026-02-03T10:00:00+01:00",
        "received": "2026-02-03T09:00:01+00:00",
        "size": len(RAW),
        "flags": [],
        "message_id": None,
    }


def test_filters() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    msg = record()
    assert summary.matches(p.Criteria(sender="JÖRG"), msg, None, now)
    assert summary.matches(p.Criteria(recipient="y@c"), msg, None, now)
    assert not summary.matches(p.Criteria(subject="bye"), msg, None, now)
    assert summary.matches(p.Criteria(text="BODY"), msg, RAW, now)
    assert summary.matches(p.Criteria(unseen=True), msg, None, now)
    assert not summary.matches(
        p.Criteria(unseen=True), record(flags=frozenset({"\\Seen"})), None, now
    )
    assert not summary.matches(p.Criteria(since=datetime(2026, 2, 4, tzinfo=UTC)), msg, None, now)


def change(kind: ChangeKind, **fields: object) -> Change:
    values: dict[str, object] = {
        "id": 1,
        "account_id": 1,
        "mailbox_id": 2,
        "mailbox_name": "INBOX",
        "modseq": 4,
        "kind": kind,
        "uid": None,
        "flags": None,
        "detail": {},
    }
    values.update(fields)
    return Change(**values)  # type: ignore[arg-type]


def test_change_events() -> None:
    new = summary.change_event(
        change(ChangeKind.MESSAGE_NEW, uid=7), {"uid": 7, "mailbox": "INBOX"}
    )
    assert new == {"event": "message.new", "uid": 7, "mailbox": "INBOX", "modseq": 4}
    assert summary.change_event(change(ChangeKind.MESSAGE_NEW, uid=7), None) is None
    flags = change(ChangeKind.MESSAGE_FLAGS, uid=7, flags=frozenset({"\\Seen", "$A"}))
    assert summary.change_event(flags, None) == {
        "event": "message.flags",
        "mailbox": "INBOX",
        "uid": 7,
        "flags": ["$A", "\\Seen"],
        "modseq": 4,
    }
    renamed = change(ChangeKind.MAILBOX_RENAMED, detail={"old": "A", "new": "B"})
    assert summary.change_event(renamed, None) == {
        "event": "mailbox.renamed",
        "mailbox": "B",
        "old": "A",
    }


def test_capture_routing() -> None:
    router = CaptureRouter(
        CaptureConfig(
            enabled=True,
            account="All@x.test",
            inboxes=(
                CaptureInbox("a@x.test", ("team-a.example", "ci@shared.example")),
                CaptureInbox("b@x.test", ("@shared.example",)),
            ),
        )
    )
    assert router.route("dev@Team-A.example") == "a@x.test"
    assert router.route("CI@shared.example") == "a@x.test"  # the address rule wins
    assert router.route("other@shared.example") == "b@x.test"
    assert router.route("sub@team-a.example.org") == "all@x.test"
    assert router.route("postmaster") == "all@x.test"
    assert router.accounts == ["all@x.test", "a@x.test", "b@x.test"]
