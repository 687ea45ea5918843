"""PURE BODY[section] extraction (RFC 9051 6.4.5) over the raw message and
its MIME tree (``mailstack.mime.parse_tree``)."""

from __future__ import annotations

from mailstack import mime
from mailstack.imap.commands import Section


def find_part(root: mime.Part, path: tuple[int, ...]) -> mime.Part | None:
    """The entity named by a part number path.  Every message has part 1
    (its body when not multipart); the parts of a message/rfc822 part are
    those of the encapsulated message."""
    node = root
    for number in path:
        if node.message is not None:
            node = node.message
        if node.is_multipart:
            if number > len(node.children):
                return None
            node = node.children[number - 1]
        elif number != 1:
            return None
    return node


def _header_fields(block: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    """The header lines (with their folded continuations) whose field name is
    (or, with ``exclude``, is not) in ``names``, then the blank line."""
    wanted = {name.lower() for name in names}
    out: list[bytes] = []
    keep = False
    for line in block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().decode("latin-1").lower()
        keep = (name in wanted) != exclude and b":" in line
        if keep:
            out.append(line)
    out.append(b"\r\n")
    return b"".join(out)


def extract(raw: bytes, root: mime.Part, section: Section) -> bytes | None:
    """The octets of BODY[section], or None when the section does not exist."""
    if not section.part and not section.text:
        return raw
    node = find_part(root, section.part) if section.part else root
    if node is None:
        return None
    if section.text == "MIME":
        return raw[node.start : node.body_start]
    if not section.text:
        return raw[node.body_start : node.end]
    if section.part:
        # HEADER / TEXT of a part: only a message/rfc822 part has them.
        if node.message is None:
            return None
        node = node.message
    header = raw[node.start : node.body_start]
    if section.text == "HEADER":
        return header
    if section.text == "TEXT":
        return raw[node.body_start : node.end]
    return _header_fields(header, section.fields, exclude=section.text.endswith(".NOT"))


# Content-Transfer-Encodings BINARY can undo (RFC 2045 6.1).
KNOWN_ENCODINGS = frozenset({"", "7bit", "8bit", "binary", "base64", "quoted-printable"})


class UnknownEncoding(ValueError):
    """BINARY of a part in an encoding we cannot undo (RFC 3516 4.3: [UNKNOWN-CTE])."""


def binary(raw: bytes, root: mime.Part, section: Section) -> bytes | None:
    """BINARY[part] (RFC 3516 / 9051 6.4.5): the part with its transfer encoding undone."""
    node = find_part(root, section.part) if section.part else root
    if node is None or node.is_multipart:
        return None
    if not section.part:
        return raw
    encoding = (node.header("content-transfer-encoding") or "").strip().lower()
    if encoding not in KNOWN_ENCODINGS:
        raise UnknownEncoding(encoding)
    return mime.decoded_body(raw, node)
