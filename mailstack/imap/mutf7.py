"""PURE modified UTF-7 for mailbox names (RFC 3501 5.1.3).

Printable US-ASCII stands for itself ("&" is "&-"); other characters are
UTF-16BE, base64 with "," instead of "/", no padding, between "&" and "-".
"""

from __future__ import annotations

import base64


class Mutf7Error(ValueError):
    """Not valid modified UTF-7."""


def _b64(chars: str) -> str:
    data = chars.encode("utf-16-be")
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",")


def encode(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []
    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            if pending:
                out.append("&" + _b64("".join(pending)) + "-")
                pending = []
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    if pending:
        out.append("&" + _b64("".join(pending)) + "-")
    return "".join(out)


def decode(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if not 0x20 <= ord(char) <= 0x7E:
            raise Mutf7Error("non-ASCII character in modified UTF-7")
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise Mutf7Error("unterminated shift sequence")
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            try:
                data = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
                decoded = data.decode("utf-16-be")
            except (ValueError, UnicodeDecodeError) as exc:
                raise Mutf7Error("bad shift sequence") from exc
            # RFC 3501 5.1.3: encoding must be minimal; a decoded printable
            # character would have been written directly.
            if any(0x20 <= ord(c) <= 0x7E for c in decoded) or encode(decoded) != "&" + chunk + "-":
                raise Mutf7Error("non-canonical shift sequence")
            out.append(decoded)
        i = end + 1
    return "".join(out)
