"""PURE SORT and THREAD keys of one message, derived once at delivery.

``mime.analyze`` calls :func:`derive` and the store keeps the result with the
message (``MessageRecord.sort_keys``), so SORT and THREAD never parse a Date
or a Subject again.  Messages stored before the keys existed get them from
the stored decoded headers and ENVELOPE (``sorting.keys_of``).

Shape (JSON-compatible): strings are i;unicode-casemap keys (collation.py).

* ``subject``: base subject (RFC 5256 2.1); ``reply``: the subject marks a
  reply or forward (THREAD=REFERENCES step 5)
* ``date``: sent date as UTC seconds, or None when the Date field is missing
  or unparsable (RFC 5256 3: the internal date is used instead)
* ``from`` / ``to`` / ``cc``: addr-mailbox of the first address (RFC 5256 3)
* ``displayfrom`` / ``displayto``: display name of the first address, else
  its addr-spec (RFC 5957 3)
* ``id``: the Message-ID, ``refs``: the References message ids, else the
  first In-Reply-To one (RFC 5256 3, REFERENCES step 1)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from mailstack.imap import base_subject
from mailstack.imap.collation import casemap

_MSG_ID = re.compile(r"<[^<>\s]+>")
# ENVELOPE indexes (mime.py): 2 from, 5 to, 6 cc.
_ENV_FROM, _ENV_TO, _ENV_CC = 2, 5, 6


def _first_address(addresses: Any) -> list[Any] | None:
    """The first address of an ENVELOPE address list.  A group's start
    marker counts, its mailbox being the group name (RFC 9051 7.5.2), as in
    Dovecot."""
    return list(addresses[0]) if addresses else None


def _mailbox_key(addresses: Any) -> str:
    first = _first_address(addresses)
    return "" if first is None else casemap(first[2] or "")


def _display_key(addresses: Any, decode: Callable[[str], str]) -> str:
    first = _first_address(addresses)
    if first is None:
        return ""
    name = decode(first[0]).strip() if first[0] else ""
    if not name and first[3] is None:  # a group: its name
        name = decode(first[2] or "").strip()
    return casemap(name or f"{first[2]}@{first[3]}")


# The date-time RFC 5322 3.3 asks for, as nearly every client writes it
# ("Mon, 30 Nov 2026 00:10:33 +0000", a comment may follow): read directly.
# Anything else goes to the email package's lenient parser, which reads
# these the same way but costs several times as much (every message stored
# has its Date read here).
_RFC5322_DATE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?([0-9]{1,2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})(?=\s|\Z)"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def _parse_date(value: str) -> datetime:
    """``email.utils.parsedate_to_datetime``, with the RFC 5322 form read
    directly; raises ValueError (or what that raises) when unparsable."""
    match = _RFC5322_DATE.match(value)
    if match is None:
        return parsedate_to_datetime(value)
    day, month, year, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
    # As the email package reads a zone (hours and minutes, each as
    # written) and a year below 100 (POSIX: 69-99 are 19xx, 0-68 20xx).
    offset = int(zone_hours) * 3600 + int(zone_minutes) * 60
    number = int(year)
    if number < 100:
        number += 1900 if number > 68 else 2000
    return datetime(
        number,
        _MONTHS[month],
        int(day),
        int(hour),
        int(minute),
        int(second),
        # "-0000": UTC without a claim about the local zone (naive, as there).
        tzinfo=None
        if sign == "-" and not offset
        else timezone(timedelta(seconds=-offset if sign == "-" else offset)),
    )


def _sent_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        when = _parse_date(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC without a claim about the local zone
        when = when.replace(tzinfo=UTC)
    try:
        return int(when.timestamp())
    except (OverflowError, OSError, ValueError):
        return None


def derive(headers: dict[str, str], envelope: Any, decode: Callable[[str], str]) -> dict[str, Any]:
    """The keys of a message from its decoded header fields and ENVELOPE
    (``decode`` undoes RFC 2047 in display names: ``mime.decode_words``)."""
    base, reply = base_subject.extract(headers.get("subject", ""))
    ids = _MSG_ID.findall(headers.get("message-id", ""))
    refs = _MSG_ID.findall(headers.get("references", ""))
    if not refs:
        refs = _MSG_ID.findall(headers.get("in-reply-to", ""))[:1]
    env = envelope or [None] * 10
    return {
        "subject": casemap(base),
        "reply": reply,
        "date": _sent_date(headers.get("date")),
        "from": _mailbox_key(env[_ENV_FROM]),
        "to": _mailbox_key(env[_ENV_TO]),
        "cc": _mailbox_key(env[_ENV_CC]),
        "displayfrom": _display_key(env[_ENV_FROM], decode),
        "displayto": _display_key(env[_ENV_TO], decode),
        "id": ids[0] if ids else None,
        "refs": refs,
    }
