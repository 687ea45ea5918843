"""PURE SORT ordering (RFC 5256 3, RFC 5957 DISPLAYFROM/DISPLAYTO).

Messages are ordered by the criteria in turn; messages equal under all of
them keep mailbox order (RFC 5256 3: "sorted according to the order in
which they appear in the mailbox"), which REVERSE does not reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# sort-key names of RFC 5256 3 and RFC 5957 3 (REVERSE is a prefix, see grammar).
CRITERIA = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 2 ms per 1,000 messages
class Sortable:
    """One matching message: its number in the answer and what SORT compares."""

    number: int  # sequence number or UID, as the answer reports it
    position: int  # place in the mailbox (sequence number)
    arrival: float  # internal date, UTC seconds
    size: int
    keys: dict[str, Any]  # sort_keys.derive


def sent_date(item: Sortable) -> float:
    """RFC 5256 3 DATE: the Date field in UTC, else the internal date."""
    sent = item.keys.get("date")
    return item.arrival if sent is None else float(sent)


def _key(criterion: str) -> Callable[[Sortable], Any]:
    if criterion == "ARRIVAL":
        return lambda item: item.arrival
    if criterion == "DATE":
        return sent_date
    if criterion == "SIZE":
        return lambda item: item.size
    name = criterion.lower()
    return lambda item: item.keys.get(name, "")


def order(items: Sequence[Sortable], criteria: Sequence[tuple[str, bool]]) -> list[Sortable]:
    """``items`` sorted by ``criteria``: (criterion, reversed) pairs, most
    significant first.  Python's sort is stable (also with reverse=True),
    so sorting by the least significant criterion first composes them."""
    result = sorted(items, key=lambda item: item.position)
    for criterion, reverse in reversed(criteria):
        result.sort(key=_key(criterion), reverse=reverse)
    return result
