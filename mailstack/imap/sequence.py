"""PURE sequence sets (RFC 9051 9 sequence-set) and their resolution."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

STAR = -1  # "*": the largest number in use


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """Ranges as written (STAR for "*"); ``saved`` is "$" (RFC 5182 SEARCHRES)."""

    ranges: tuple[tuple[int, int], ...]
    saved: bool = False

    def __str__(self) -> str:
        if self.saved:
            return "$"

        def num(n: int) -> str:
            return "*" if n == STAR else str(n)

        return ",".join(num(a) if a == b else f"{num(a)}:{num(b)}" for a, b in self.ranges)

    def _bounds(self, largest: int) -> list[tuple[int, int]]:
        out = []
        for a, b in self.ranges:
            lo = largest if a == STAR else a
            hi = largest if b == STAR else b
            out.append((min(lo, hi), max(lo, hi)))
        return out

    def sequence_numbers(self, count: int) -> list[int] | None:
        """Message numbers 1..count selected; None if one is out of range (RFC 9051 6.4.5: BAD)."""
        chosen: set[int] = set()
        for lo, hi in self._bounds(count):
            if lo < 1 or hi > count:
                return None
            chosen.update(range(lo, hi + 1))
        return sorted(chosen)

    def select_uids(self, uids: list[int]) -> list[int]:
        """The members of the sorted ``uids`` inside the set; "*" is the largest UID
        (RFC 9051 6.4.8: a range is valid even if no UID falls in it)."""
        largest = uids[-1] if uids else 0
        chosen: set[int] = set()
        for lo, hi in self._bounds(largest):
            chosen.update(uids[bisect_left(uids, lo) : bisect_right(uids, hi)])
        return sorted(chosen)

    def contains(self, number: int, largest: int) -> bool:
        return any(lo <= number <= hi for lo, hi in self._bounds(largest))


def from_numbers(numbers: list[int]) -> str:
    """Compact "1:3,7" form of sorted numbers (COPYUID, ESEARCH ALL)."""
    parts: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(parts)
