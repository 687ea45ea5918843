"""Authentication-Results (RFC 8601): our header's syntax, and removing
the forged ones that claim our authserv-id."""

from __future__ import annotations

import pytest

from mailstack.smtp.auth_results import MethodResult, authserv_id_of, header, remove_ours
from mailstack.smtp.author import author_domain


def test_header_syntax() -> None:
    results = [
        MethodResult("spf", "pass", "", (("smtp.mailfrom", "example.test"),)),
        MethodResult("dkim", "fail", 'bad "sig"', (("header.b", "ab/+c=d"),)),
        MethodResult("dmarc", "fail", "", (("header.from", "example.test"),), "p=reject (x)"),
    ]
    assert header("mx.example.test", results) == (
        b"Authentication-Results: mx.example.test;\r\n"
        b"\tspf=pass smtp.mailfrom=example.test;\r\n"
        b'\tdkim=fail reason="bad \\"sig\\"" header.b="ab/+c=d";\r\n'
        b"\tdmarc=fail (p=reject \\(x\\)) header.from=example.test\r\n"
    )
    assert header("mx.example.test", []) == b"Authentication-Results: mx.example.test; none\r\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mx.example.test; spf=pass", "mx.example.test"),
        ("  (a (nested) comment) MX.example.test 1; none", "MX.example.test"),
        ('"quoted.example"; none', "quoted.example"),
        ("mx.example.test;", "mx.example.test"),
        ("", ""),
    ],
)
def test_authserv_id_of(value: str, expected: str) -> None:
    assert authserv_id_of(value) == expected


def test_remove_ours_keeps_everything_else_byte_for_byte() -> None:
    message = (
        b"Authentication-Results: other.example; spf=pass\r\n"
        b"authentication-results:  MX.example.test;\r\n\tdkim=pass\r\n"
        b"Subject: x\r\n"
        b"Authentication-Results: (c) mx.example.test; none\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.test; in the body stays\r\n"
    )
    assert remove_ours(message, "mx.example.test") == (
        b"Authentication-Results: other.example; spf=pass\r\n"
        b"Subject: x\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.test; in the body stays\r\n"
    )
    untouched = b"Subject: x\nAuthentication-Results: a.example; none\n\nbody\n"
    assert remove_ours(untouched, "mx.example.test") is untouched


@pytest.mark.parametrize(
    ("header_block", "expected"),
    [
        (b"From: Alice <alice@Example.TEST>\r\n", "example.test"),
        (b'From: "a, b" <a@x.example>\r\n', "x.example"),
        (b"From: a@x.example, b@y.example\r\n", None),  # RFC 7489 6.6.1
        (b"From: a@x.example\r\nFrom: b@x.example\r\n", None),
        (b"Subject: no from\r\n", None),
        (b"From: undisclosed:;\r\n", None),
        (b"From: a@[127.0.0.1]\r\n", None),
    ],
)
def test_author_domain(header_block: bytes, expected: str | None) -> None:
    assert author_domain(header_block + b"\r\nbody\r\n") == expected
