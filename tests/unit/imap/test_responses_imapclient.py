"""Our ENVELOPE/BODYSTRUCTURE bytes through imapclient's strict response parser."""

from __future__ import annotations

from typing import Any

import pytest
from imapclient.response_parser import parse_fetch_response

from mailstack import mime
from mailstack.imap import responses
from tests.unit import test_mime


def parse(raw: bytes, utf8: bool) -> dict[bytes, Any]:
    analysis = mime.analyze(raw)
    line = (
        b"1 (UID 1 ENVELOPE "
        + responses.envelope(analysis.envelope, utf8=utf8)
        + b" BODYSTRUCTURE "
        + responses.bodystructure(analysis.bodystructure, extensible=True, utf8=utf8)
        + b" BODY "
        + responses.bodystructure(analysis.bodystructure, extensible=False, utf8=utf8)
        + b")"
    )
    # imapclient wants literals split out as (prefix-with-{n}, data) tuples.
    pieces: list[bytes | tuple[bytes, bytes]] = []
    rest = line
    while b"}\r\n" in rest:
        head, tail = rest.split(b"}\r\n", 1)
        size = int(head[head.rindex(b"{") + 1 :])
        pieces.append((head + b"}", tail[:size]))
        rest = tail[size:]
    pieces.append(rest)
    parsed: dict[int, dict[bytes, Any]] = parse_fetch_response(pieces)
    return parsed[1]


CORPUS = {
    "simple": test_mime.SIMPLE,
    "mixed": test_mime.MIXED,
    "groups": b'From: Team: a@x.test, "B" <b@y.test>;\r\nTo: undisclosed-recipients:;\r\n\r\n',
    "8bit": "Subject: héllo\r\nFrom: Zoë <z@x.test>\r\n\r\nçava\r\n".encode(),
    "quotes": b'From: "a \\"quoted\\" name" <q@x.test>\r\nSubject: back\\slash\r\n\r\nx',
    "empty": b"",
}


@pytest.mark.parametrize("utf8", [False, True])
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_imapclient_parses_our_output(name: str, utf8: bool) -> None:
    data = parse(CORPUS[name], utf8)
    assert data[b"SEQ"] == 1
    envelope = data[b"ENVELOPE"]
    expected = mime.analyze(CORPUS[name]).envelope
    assert (envelope.subject.decode() if envelope.subject else None) == expected[1]
    assert data[b"BODYSTRUCTURE"] is not None and data[b"BODY"] is not None


def test_envelope_fields_survive_quoting() -> None:
    data = parse(CORPUS["quotes"], utf8=False)
    assert data[b"ENVELOPE"].from_[0].name == b'a "quoted" name'
    assert data[b"ENVELOPE"].subject == b"back\\slash"
    mixed = parse(CORPUS["mixed"], utf8=False)[b"BODYSTRUCTURE"]
    assert mixed.is_multipart and mixed[1] == b"mixed"
    assert mixed[0][1][1] == b"pdf" and mixed[0][1][8][0] == b"attachment"
    assert mixed[0][2][7][1] == b"inner"  # the message/rfc822 part's ENVELOPE
