"""PURE response serialization (RFC 9051 7 and 9).

Strings are sent as an atom only where the grammar allows one (mailbox names
and flags), otherwise quoted when every octet is a legal QUOTED-CHAR, else as
a literal; None is NIL.  ENVELOPE and BODYSTRUCTURE are rendered from the
JSON-compatible lists made by ``mailstack.mime`` at delivery.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from mailstack.imap.grammar import ASTRING_CHARS
from mailstack.imap.sequence import from_numbers

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Longer quoted strings are sent as literals: cheaper for clients to parse.
_MAX_QUOTED = 1024
# Octets that cannot go in a quoted string as they are (RFC 9051 9 QUOTED-CHAR):
# CR, LF, NUL always; 8-bit unless UTF-8 is allowed; '"' and "\" need escapes.
_UNSAFE_UTF8 = re.compile(rb'[\r\n\0"\\]')
_UNSAFE_ASCII = re.compile(rb'[\r\n\0"\\\x80-\xff]')
_UNSAFE_ASCII_LITERAL = re.compile(rb"[\r\n\0\x80-\xff]")
_UNSAFE_UTF8_LITERAL = re.compile(rb"[\r\n\0]")


def string(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    """nstring: NIL, a quoted string, or a literal (8-bit, CR/LF, or long).

    ``utf8``: the client may receive UTF-8 in quoted strings (IMAP4rev2 /
    UTF8=ACCEPT); IMAP4rev1 gets non-ASCII as a literal.
    """
    if value is None:
        return b"NIL"
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) <= _MAX_QUOTED:
        unsafe = (_UNSAFE_UTF8 if utf8 else _UNSAFE_ASCII).search(data)
        if unsafe is None:
            return b'"' + data + b'"'
        if (_UNSAFE_UTF8_LITERAL if utf8 else _UNSAFE_ASCII_LITERAL).search(data) is None:
            # Only quotes and backslashes: still a quoted string, escaped.
            return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def astring(value: str, *, utf8: bool = False) -> bytes:
    """astring: the bare atom when that reads back identically, else a string."""
    data = value.encode("utf-8")
    # ASTRING-CHAR is US-ASCII only (RFC 9051 9: CHAR = %x01-7F): UTF-8 is quoted.
    if data.isascii() and data and all(b in ASTRING_CHARS for b in data) and data.upper() != b"NIL":
        return data
    return string(data, utf8=utf8)


def sexp(value: Any, *, utf8: bool = False) -> bytes:
    """A nested list of str/int/None as a parenthesized list."""
    # Checked in order of frequency in ENVELOPE/BODYSTRUCTURE data.
    if isinstance(value, str):
        return string(value, utf8=utf8)
    if value is None:
        return b"NIL"
    if isinstance(value, list):
        return b"(" + b" ".join([sexp(item, utf8=utf8) for item in value]) + b")"
    if isinstance(value, bool):
        raise TypeError("bool is not an IMAP value")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, bytes):
        return string(value, utf8=utf8)
    return b"(" + b" ".join([sexp(item, utf8=utf8) for item in value]) + b")"


def envelope(env: Any, *, utf8: bool = False) -> bytes:
    """RFC 9051 7.5.2 ENVELOPE: address lists are lists of 4-lists or NIL."""
    return sexp(env, utf8=utf8)


def _is_multipart(body: list[Any]) -> bool:
    return bool(body) and isinstance(body[0], list)


def bodystructure(body: list[Any], *, extensible: bool, utf8: bool = False) -> bytes:
    """body = "(" (body-type-1part / body-type-mpart) ")"; BODY (non-extensible)
    drops the extension data (RFC 9051 7.5.2)."""
    if _is_multipart(body):
        count = 0
        while count < len(body) and isinstance(body[count], list):
            count += 1
        children, rest = body[:count], body[count:]
        # body-type-mpart = 1*body SP media-subtype: no space between the bodies.
        inner = b"".join(
            bodystructure(child, extensible=extensible, utf8=utf8) for child in children
        )
        tail = rest if extensible else rest[:1]
        return b"(" + inner + b" " + b" ".join(sexp(item, utf8=utf8) for item in tail) + b")"
    fields = list(body)
    kind = str(fields[0]).lower() if fields else ""
    subtype = str(fields[1]).lower() if len(fields) > 1 else ""
    if kind == "message" and subtype in ("rfc822", "global") and len(fields) >= 10:
        head = [sexp(f, utf8=utf8) for f in fields[:7]]
        head.append(sexp(fields[7], utf8=utf8))
        head.append(bodystructure(fields[8], extensible=extensible, utf8=utf8))
        head.append(sexp(fields[9], utf8=utf8))
        basic_len = 10
        parts = head
    else:
        basic_len = 8 if kind == "text" else 7
        parts = [sexp(f, utf8=utf8) for f in fields[:basic_len]]
    if extensible:
        parts += [sexp(f, utf8=utf8) for f in fields[basic_len:]]
    return b"(" + b" ".join(parts) + b")"


def date_time(when: datetime) -> bytes:
    """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE"""
    offset = when.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    zone = f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    text = (
        f'"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
        f'{when.hour:02d}:{when.minute:02d}:{when.second:02d} {zone}"'
    )
    return text.encode("ascii")


def flag_list(flags: frozenset[str] | tuple[str, ...] | list[str]) -> bytes:
    return b"(" + b" ".join(f.encode("utf-8") for f in sorted(flags)) + b")"


def tagged(tag: str, status: str, text: str, code: str = "") -> bytes:
    code_part = f"[{code}] " if code else ""
    return f"{tag} {status} {code_part}{text}\r\n".encode()


def untagged(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return b"* " + data + b"\r\n"


def esearch(
    tag: str,
    uid: bool,
    returns: Collection[str],
    numbers: Sequence[int],
    *,
    in_sort_order: bool = False,
    modseq: int | None = None,
) -> bytes:
    """The ESEARCH response (RFC 4731 3.1) for SEARCH/SORT ... RETURN (...).

    ``in_sort_order`` (ESORT, RFC 5267 3): MIN and MAX are the first and
    last in sort order and ALL keeps that order; otherwise they are the
    lowest and highest and ALL is a plain set.  ``modseq``: RFC 7162 3.1.10."""
    parts = [f'ESEARCH (TAG "{tag}")']
    if uid:
        parts.append("UID")
    if numbers:
        if "MIN" in returns:
            parts.append(f"MIN {numbers[0] if in_sort_order else min(numbers)}")
        if "MAX" in returns:
            parts.append(f"MAX {numbers[-1] if in_sort_order else max(numbers)}")
        if "ALL" in returns:
            parts.append(f"ALL {from_numbers(list(numbers) if in_sort_order else sorted(numbers))}")
    if "COUNT" in returns:
        parts.append(f"COUNT {len(numbers)}")
    if modseq:
        parts.append(f"MODSEQ {modseq}")
    return untagged(" ".join(parts))
