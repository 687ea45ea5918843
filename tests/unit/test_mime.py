"""ENVELOPE / BODYSTRUCTURE analysis on a corpus of real-world shaped messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailstack import mime

SIMPLE = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"cc: minutes@CNRI.Reston.VA.US,\r\n"
    b"   John Klensin <KLENSIN@MIT.EDU>\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello\r\n"
    b"world\r\n"
)


def test_rfc_example_envelope() -> None:
    env = mime.analyze(SIMPLE).envelope
    terry = [["Terry Gray", None, "gray", "cac.washington.edu"]]
    assert env == [
        "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
        "IMAP4rev1 WG mtg summary and minutes",
        terry,
        terry,  # sender defaults to from
        terry,  # reply-to defaults to from
        [[None, None, "imap", "cac.washington.edu"]],
        [
            [None, None, "minutes", "CNRI.Reston.VA.US"],
            ["John Klensin", None, "KLENSIN", "MIT.EDU"],
        ],
        None,
        None,
        "<B27397-0100000@cac.washington.edu>",
    ]


def test_rfc_example_bodystructure() -> None:
    bs = mime.analyze(SIMPLE).bodystructure
    assert bs == [
        "TEXT",
        "PLAIN",
        ["CHARSET", "US-ASCII"],
        None,
        None,
        "7BIT",
        14,
        2,
        None,
        None,
        None,
        None,
    ]


def test_missing_headers_and_no_content_type() -> None:
    a = mime.analyze(b"\r\nbody only\r\n")
    assert a.envelope == [None] * 10
    assert a.bodystructure[:7] == ["text", "plain", ["charset", "us-ascii"], None, None, "7BIT", 11]
    assert a.bodystructure[7] == 1
    assert a.headers == {}


def test_header_only_message() -> None:
    a = mime.analyze(b"Subject: x\r\n")
    assert a.envelope[1] == "x"
    assert a.bodystructure[6] == 0 and a.bodystructure[7] == 0


MIXED = (
    b"From: a@example.test\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= menu\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: multipart/alternative; boundary=YY\r\n"
    b"\r\n"
    b"--YY\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9 au lait\r\n"
    b"--YY\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>hi</p>\r\n"
    b"--YY--\r\n"
    b"--XX\r\n"
    b'Content-Type: application/pdf; name="a b.pdf"\r\n'
    b'Content-Disposition: attachment; filename="a b.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-ID: <pdf1@x>\r\n"
    b"Content-Language: en, de\r\n"
    b"\r\n"
    b"SGVsbG8=\r\n"
    b"--XX\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b'From: "Doe, John" <john@x.test>\r\n'
    b"\r\n"
    b"inner body\r\n"
    b"--XX--\r\n"
    b"epilogue\r\n"
)


def test_mixed_alternative_attachment_and_rfc822() -> None:
    a = mime.analyze(MIXED)
    bs = a.bodystructure
    alt, pdf, msg = bs[0], bs[1], bs[2]
    assert bs[3:] == ["mixed", ["boundary", "XX"], None, None, None]
    assert alt[2:] == ["alternative", ["boundary", "YY"], None, None, None]
    plain = alt[0]
    assert plain[:8] == [
        "text",
        "plain",
        ["charset", "utf-8"],
        None,
        None,
        "quoted-printable",
        17,
        1,
    ]
    html = alt[1]
    assert html[:8] == ["text", "html", ["charset", "utf-8"], None, None, "7BIT", 9, 1]
    assert pdf == [
        "application",
        "pdf",
        ["name", "a b.pdf"],
        "<pdf1@x>",
        None,
        "base64",
        8,
        None,
        ["attachment", ["filename", "a b.pdf"]],
        ["en", "de"],
        None,
    ]
    assert msg[:6] == ["message", "rfc822", None, None, None, "7BIT"]
    inner_raw = b'Subject: inner\r\nFrom: "Doe, John" <john@x.test>\r\n\r\ninner body'
    assert msg[6] == len(inner_raw)
    assert msg[7][1] == "inner"
    assert msg[7][2] == [["Doe, John", None, "john", "x.test"]]
    assert msg[8][:8] == ["text", "plain", ["charset", "us-ascii"], None, None, "7BIT", 10, 1]
    assert msg[9] == 4
    assert a.headers["subject"] == "café menu"
    assert a.envelope[1] == "=?utf-8?q?caf=C3=A9?= menu"  # ENVELOPE stays raw
    assert "café au lait" in mime.text_content(MIXED)
    assert "<p>hi</p>" in mime.text_content(MIXED)


def test_part_offsets_exclude_delimiter_line_break() -> None:
    tree = mime.parse_tree(MIXED)
    html = tree.children[0].children[1]
    assert MIXED[html.body_start : html.end] == b"<p>hi</p>"
    assert MIXED[html.start : html.body_start] == b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    assert tree.children[2].message is not None


def test_related_and_missing_final_boundary() -> None:
    raw = (
        b'Content-Type: multipart/related; boundary=b; type="text/html"\r\n\r\n'
        b"--b\r\nContent-Type: text/html\r\n\r\n<img src=cid:1>\r\n"
        b"--b\r\nContent-Type: image/png\r\nContent-ID: <1>\r\n\r\nPNG"
    )
    bs = mime.analyze(raw).bodystructure
    assert bs[2] == "related"
    assert bs[3] == ["boundary", "b", "type", "text/html"]
    assert bs[1][:7] == ["image", "png", None, "<1>", None, "7BIT", 3]


def test_multipart_without_boundary_is_text() -> None:
    bs = mime.analyze(b"Content-Type: multipart/mixed\r\n\r\nabc\r\n").bodystructure
    assert bs[:2] == ["text", "plain"]


def test_multipart_with_no_parts_gets_empty_part() -> None:
    bs = mime.analyze(b"Content-Type: multipart/mixed; boundary=q\r\n\r\nnothing\r\n").bodystructure
    assert isinstance(bs[0], list) and bs[0][6] == 0
    assert bs[1] == "mixed"


def test_bad_charset_and_8bit() -> None:
    raw = "Subject: héllo\r\nContent-Type: text/plain; charset=nonsense\r\n\r\nçava\r\n".encode()
    a = mime.analyze(raw)
    assert a.envelope[1] == "héllo"
    assert a.bodystructure[2] == ["charset", "nonsense"]
    assert "çava" in mime.text_content(raw)
    latin = b"Subject: caf\xe9\r\n\r\nx"
    assert mime.analyze(latin).envelope[1] == "café"


def test_groups_and_routes() -> None:
    raw = (
        b'From: Team: a@x.test, "B" <b@y.test>;, c@z.test\r\n'
        b"To: undisclosed-recipients:;\r\n"
        b"Cc: <@relay.test:d@w.test>, nodomain\r\n\r\n"
    )
    env = mime.analyze(raw).envelope
    assert env[2] == [
        [None, None, "Team", None],
        [None, None, "a", "x.test"],
        ["B", None, "b", "y.test"],
        [None, None, None, None],
        [None, None, "c", "z.test"],
    ]
    assert env[5] == [[None, None, "undisclosed-recipients", None], [None, None, None, None]]
    assert env[6] == [
        [None, "@relay.test", "d", "w.test"],
        [None, None, "nodomain", "MISSING_DOMAIN"],
    ]


def test_sender_and_reply_to_explicit() -> None:
    raw = b"From: a@x\r\nSender: s@x\r\nReply-To: r@x\r\nIn-Reply-To: <p@x>\r\n\r\n"
    env = mime.analyze(raw).envelope
    assert env[3] == [[None, None, "s", "x"]]
    assert env[4] == [[None, None, "r", "x"]]
    assert env[8] == "<p@x>"


def test_digest_default_is_message() -> None:
    raw = (
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
        b"--d\r\n\r\nSubject: one\r\n\r\nbody\r\n--d--\r\n"
    )
    bs = mime.analyze(raw).bodystructure
    assert bs[0][:2] == ["message", "rfc822"]
    assert bs[0][7][1] == "one"


def test_base64_text_decoded_for_search() -> None:
    raw = (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nw6lsw6h2ZQ==\r\n"
    )
    assert mime.text_content(raw) == "élève"


def test_deep_nesting_is_bounded() -> None:
    depth = 200
    raw = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    )
    bs = mime.analyze(raw + b"x").bodystructure
    assert json.loads(json.dumps(bs)) == bs


def test_lf_only_message() -> None:
    raw = b"Subject: lf\n\nline1\nline2\n"
    a = mime.analyze(raw)
    assert a.envelope[1] == "lf"
    assert a.bodystructure[6] == 12 and a.bodystructure[7] == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_never_raises_on_bytes(raw: bytes) -> None:
    a = mime.analyze(raw)
    assert json.loads(json.dumps([a.envelope, a.bodystructure, a.headers])) is not None


_pieces = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=a\r\n",
        b"\r\n",
        b"--a\r\n",
        b"--a--\r\n",
        b"Content-Type: message/rfc822\r\n",
        b'From: "x" <y@z>, g: ;\r\n',
        b"Subject: =?x?q?y?=\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"abc",
        b"(",
        b'"',
        b"<",
        b"\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_pieces, max_size=30))
def test_never_raises_on_mime_shaped_input(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    a = mime.analyze(raw)
    assert json.loads(json.dumps(a.bodystructure)) == a.bodystructure
    mime.text_content(raw)


@pytest.mark.parametrize(
    ("raw", "start", "end", "body"),
    [
        (b"A: 1\r\n\r\nbody", 0, 13, 8),  # CRLF blank line
        (b"A: 1\n\nbody", 0, 10, 6),  # bare LF blank line
        (b"A: 1\n\nB: 2\r\n\r\nbody", 0, 19, 6),  # the first blank line wins
        (b"A: 1\r\nB: 2\n\r\nbody", 0, 17, 13),  # LF then CRLF: still a blank line
        (b"A: 1\r\n\r\nbody", 0, 7, 7),  # the blank line is past the end: all header
        (b"\r\nbody", 0, 6, 2),  # empty header
        (b"xx\nA: 1\n\nbody", 3, 13, 9),  # a part that starts inside the message
        (b"A: 1\r\nB: 2", 0, 10, 10),  # no blank line
    ],
)
def test_split_header_finds_the_first_empty_line(
    raw: bytes, start: int, end: int, body: int
) -> None:
    assert mime.split_header(raw, start, end) == body


def test_fields_with_invalid_names_are_skipped() -> None:
    block = b"Good-Name: 1\r\nBad Name: 2\r\nBad\x7fName: 3\r\n\xe9t\xe9: 4\r\n: 5\r\nLast: 6\r\n"
    assert mime.parse_header_fields(block) == [("good-name", "1"), ("last", "6")]


_HEADER_PIECES = [
    b"a",
    b"B",
    b":",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"\x0b",
    b"\x1c",
    b"-",
    b"\xc3\xa9",
    b"\xc2\x85",
    b"\xc2\xa0",
    b"\x7f",
    b"Subject",
    b"From: x",
    b"\r\n ",
    b"\xe9",  # not UTF-8 on its own: the whole header takes the Latin-1 path
]


def _fields_decoded_one_by_one(block: bytes) -> list[tuple[str, str]]:
    """The reference: the header split as bytes, each value decoded on its own."""
    fields: list[tuple[str, bytearray]] = []
    for line in block.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].extend(line)
            continue
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].strip()
        if not name or name.translate(None, bytes(range(33, 127))):
            continue
        fields.append((name.decode("ascii").lower(), bytearray(line[colon + 1 :])))
    return [(name, mime.to_text(bytes(value)).strip()) for name, value in fields]


@settings(max_examples=3000)
@given(st.lists(st.sampled_from(_HEADER_PIECES), max_size=30))
def test_a_header_is_read_as_the_per_field_decoding_would(pieces: list[bytes]) -> None:
    # parse_header_fields decodes a valid UTF-8 header once (another one as
    # Latin-1, then each value on its own); every field must come out as
    # decoding field by field gives it (names, unfolding, and which blanks
    # strip() removes included).
    block = b"".join(pieces)
    assert mime.parse_header_fields(block) == _fields_decoded_one_by_one(block)


def test_invalid_utf8_in_one_field_leaves_the_others_utf8() -> None:
    block = b"Subject: caf\xc3\xa9\r\nX-Old: caf\xe9\r\n"  # UTF-8, then Latin-1
    assert mime.parse_header_fields(block) == [("subject", "café"), ("x-old", "café")]


def test_a_repeated_field_answers_with_its_first_value() -> None:
    part = mime.parse_tree(b"Subject: first\r\nSubject: second\r\n\r\nbody")
    assert part.header("subject") == "first"
    assert part.headers == [("subject", "first"), ("subject", "second")]


@settings(max_examples=2000)
@given(
    st.text(alphabet=st.sampled_from(list('ab.@<>,;:/=?\\ \t\r\n()"[]')), max_size=30),
    st.sampled_from([mime._SPECIALS, mime._TSPECIALS, mime._COMMA]),
)
def test_the_quick_tokenizer_agrees_with_the_full_scan(
    value: str, specials: frozenset[str]
) -> None:
    assert mime._tokenize(value, specials) == mime._scan_tokens(value, specials)


_address_bits = st.sampled_from(
    [
        "a",
        "bé",
        ".",
        "@",
        "<",
        ">",
        ",",
        " ",
        "  ",
        "\t",
        "\r\n ",
        ";",
        ":",
        '"',
        "(",
        "[",
        "\\",
        "\x0b",
    ]
)
# Address-shaped text: a display name of words, dots and runs of blanks,
# then an address in or out of angle brackets, several to a list.
_address_like = st.lists(
    st.tuples(
        st.text(alphabet=st.sampled_from(["a", "b", ".", " ", "\t", "é"]), max_size=8),
        st.sampled_from(["<", ""]),
        st.text(alphabet=st.sampled_from(["a", ".", "é"]), min_size=1, max_size=5),
        st.text(alphabet=st.sampled_from(["b", ".", "é"]), min_size=1, max_size=5),
        st.sampled_from([" ", "", "\t"]),
    ).map(lambda t: f"{t[0]}{t[1]}{t[2]}@{t[3]}{'>' if t[1] else ''}{t[4]}"),
    max_size=3,
).map(",".join)


@given(st.one_of(st.lists(_address_bits, max_size=20).map("".join), _address_like))
@example("<<a@b>")  # a bracket, a ">" or an "@" in the name: the parser's business
@example("x> <a@b>")
@example("a@b <c@d>")
@settings(max_examples=2000)
def test_the_quick_address_reader_agrees_with_the_parser(value: str) -> None:
    quick = mime._quick_address_list(value)
    if quick is not None:
        assert quick == mime._parse_address_tokens(value)


@pytest.mark.parametrize(
    "value",
    ["<a@b.example>", "a@b.example", "Ann  Lee <a.l@b.example>", "A. B. <a@b>, c@d.example"],
)
def test_common_address_lists_take_the_quick_reader(value: str) -> None:
    assert mime._quick_address_list(value) is not None
    assert mime.parse_address_list(value) == mime._parse_address_tokens(value)
