"""The Authentication-Results header field (RFC 8601): writing ours and
removing forged ones that claim our authserv-id (RFC 8601 5)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailstack import mime

FIELD_NAME = b"authentication-results"
# RFC 2045 5.1 tspecials and controls/space are not allowed in a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")


@dataclass(frozen=True, slots=True)
class MethodResult:
    """One resinfo: ``method=result reason="..." ptype.property=value ...``."""

    method: str  # spf, dkim, dmarc (RFC 8601 6.2 registry)
    result: str
    reason: str = ""
    properties: Sequence[tuple[str, str]] = field(default_factory=tuple)
    comment: str = ""  # e.g. the DMARC policy, as receivers commonly show it


def value(text: str) -> str:
    """RFC 8601 2.2 ``value``: a token when it can be, else a quoted string."""
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def header(authserv_id: str, results: Sequence[MethodResult]) -> bytes:
    """The field, one resinfo per folded line, CRLF-terminated."""
    if not results:
        return f"Authentication-Results: {authserv_id}; none\r\n".encode()
    parts = []
    for r in results:
        text = f"{r.method}={r.result}"
        if r.comment:
            escaped = re.sub(r"([()\\])", r"\\\1", _printable(r.comment))
            text += f" ({escaped})"
        if r.reason:
            text += f" reason={value(_printable(r.reason))}"
        for name, prop in r.properties:
            text += f" {name}={value(prop)}"
        parts.append(text)
    body = ";\r\n\t".join(parts)
    return f"Authentication-Results: {authserv_id};\r\n\t{body}\r\n".encode()


def _printable(text: str) -> str:
    # A reason comes from libraries and DNS: keep it one short ASCII line.
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in " ".join(text.split()))[:200]


def _skip_cfws(text: str, pos: int) -> int:
    """Past whitespace and (nested) comments (RFC 5322 3.2.2)."""
    depth = 0
    while pos < len(text):
        char = text[pos]
        if depth and char == "\\":
            pos += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth and not char.isspace():
            break
        pos += 1
    return pos


def authserv_id_of(field_value: str) -> str:
    """The authserv-id an Authentication-Results value starts with."""
    pos = _skip_cfws(field_value, 0)
    if field_value[pos : pos + 1] == '"':
        end = pos + 1
        out = []
        while end < len(field_value) and field_value[end] != '"':
            if field_value[end] == "\\":
                end += 1
            out.append(field_value[end : end + 1])
            end += 1
        return "".join(out)
    match = re.compile(r"[^\s;()\"]+").match(field_value, pos)
    return match.group(0) if match else ""


def remove_ours(content: bytes, authserv_id: str) -> bytes:
    """``content`` without the Authentication-Results fields whose
    authserv-id is ours: they were not written by us (RFC 8601 5)."""
    body_start = mime.split_header(content, 0, len(content))
    lines = content[:body_start].splitlines(keepends=True)
    kept: list[bytes] = []
    wanted = authserv_id.lower()
    index = 0
    while index < len(lines):
        end = index + 1
        while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
            end += 1
        name, colon, rest = lines[index].partition(b":")
        folded = [rest, *lines[index + 1 : end]]
        field_value = mime.to_text(b"".join(folded)).replace("\r", "").replace("\n", "")
        forged = (
            colon
            and name.strip().lower() == FIELD_NAME
            and authserv_id_of(field_value).lower() == wanted
        )
        if not forged:
            kept.extend(lines[index:end])
        index = end
    if len(kept) == len(lines):
        return content
    return b"".join(kept) + content[body_start:]
