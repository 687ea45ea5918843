"""Validation and normalisation of domains, addresses, mailbox names and flags.

Pure functions (no database); each raises :class:`InvalidName` with a message
fit to show the user.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mailstack.store.records import SYSTEM_FLAGS, InvalidName

# RFC 1035 2.3.1 / RFC 1123 2.1: letters, digits, hyphens; no hyphen at either
# end of a label; labels up to 63 octets, the name up to 253.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 5321 4.1.2 Dot-string atoms (RFC 5322 atext); RFC 6531 3.3 extends atext
# with any non-ASCII UTF-8 character.
_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+$")

# RFC 6154 2: the special-use attributes.
SPECIAL_USE = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)

INBOX = "INBOX"
DELIMITER = "/"
MAX_MAILBOX_NAME = 1000
# RFC 9051 9 flag-keyword is an atom: no atom-specials.
_SYSTEM_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAGS}
_FLAG = re.compile(r"^\\?[^\s(){%*\"\\\]\x00-\x1f\x7f]+$")


def normalize_domain(name: str) -> str:
    domain = name.strip().lower().rstrip(".")
    if not domain or len(domain) > 253:
        raise InvalidName(f"not a domain name: {name!r}")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidName(f"not a domain name: {name!r}")
    return domain


def normalize_address(address: str) -> str:
    """``local@domain`` with the domain lower case and the local part as given."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        raise InvalidName(f"not an address: {address!r}")
    # RFC 5321 4.5.3.1.1: local part up to 64 octets.
    if len(local.encode()) > 64 or not all(_ATOM.match(atom) for atom in local.split(".")):
        raise InvalidName(f"not an address: {address!r}")
    return f"{local}@{normalize_domain(domain)}"


def address_key(address: str) -> str:
    """Lookup key: local parts match case-insensitively."""
    return normalize_address(address).lower()


def normalize_alias(alias: str) -> str:
    """``user@domain`` or the catch-all ``@domain``."""
    if alias.strip().startswith("@"):
        return "@" + normalize_domain(alias.strip()[1:])
    return normalize_address(alias)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def normalize_mailbox(name: str) -> str:
    """Check a mailbox name; INBOX (any case) becomes ``INBOX`` (RFC 9051 5.1)."""
    if not name or len(name) > MAX_MAILBOX_NAME:
        raise InvalidName("mailbox name is empty or too long")
    parts = name.split(DELIMITER)
    if any(not part for part in parts):
        raise InvalidName(f"mailbox name has an empty level: {name!r}")
    # Wildcards would make LIST patterns ambiguous (RFC 9051 5.1).
    if any(ord(c) < 0x20 or c in "*%\x7f" for c in name):
        raise InvalidName(f"mailbox name has a forbidden character: {name!r}")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    return DELIMITER.join(parts)


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    """Validated flags, system flags in their canonical case (they match
    case-insensitively, RFC 9051 2.3.2); \\Recent is dropped (not stored)."""
    if isinstance(flags, str):
        raise TypeError("flags must be an iterable of strings, not a string")
    result = set()
    for flag in flags:
        if not isinstance(flag, str) or not _FLAG.match(flag):
            raise InvalidName(f"not a flag: {flag!r}")
        lowered = flag.lower()
        if lowered == "\\recent":
            continue
        result.add(_SYSTEM_BY_LOWER.get(lowered, flag))
    return frozenset(result)


def flags_to_text(flags: frozenset[str]) -> str:
    return " ".join(sorted(flags))


def flags_from_text(text: str) -> frozenset[str]:
    return frozenset(text.split())
