"""PURE CONDSTORE / QRESYNC rules (RFC 7162): which commands switch CONDSTORE
on, UID-range arithmetic for VANISHED, and the message sequence match data
of a QRESYNC SELECT (section 3.2.5.2).

UID sets are handled as sorted, merged ranges ``(first, last)`` so that a
client's ``1:4294967295`` or a fallback answer over a large mailbox costs
time in proportion to the messages present, not to the numbers named.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from mailstack.imap import commands as c
from mailstack.imap.sequence import STAR, SequenceSet

Ranges = list[tuple[int, int]]
# Ranges per VANISHED line: keeps each response line reasonably short.
VANISHED_RANGES_PER_LINE = 500


def enables_condstore(cmd: c.Command) -> bool:
    """RFC 7162 3.1: the CONDSTORE-enabling commands (ENABLE is handled apart)."""
    if isinstance(cmd, c.Select):
        return cmd.condstore or cmd.qresync is not None
    if isinstance(cmd, c.Status):
        return "HIGHESTMODSEQ" in cmd.items
    if isinstance(cmd, c.Fetch):
        return cmd.changed_since is not None or any(i.name == "MODSEQ" for i in cmd.items)
    if isinstance(cmd, c.Store):
        return cmd.unchanged_since is not None
    if isinstance(cmd, c.Search):
        return uses_modseq(cmd.key)
    return False


def uses_modseq(key: c.SearchKey) -> bool:
    """Whether a search criterion names MODSEQ (RFC 7162 3.1.5)."""
    if key.op == "MODSEQ":
        return True
    return any(isinstance(arg, c.SearchKey) and uses_modseq(arg) for arg in key.args)


def merged(ranges: Sequence[tuple[int, int]]) -> Ranges:
    """Sorted, non-overlapping, non-adjacent ranges."""
    out: Ranges = []
    for lo, hi in sorted((min(a, b), max(a, b)) for a, b in ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def uid_ranges(uids: SequenceSet | None, uid_max: int) -> Ranges:
    """A UID set as ranges, "*" meaning ``uid_max``; None (no known-uids) is
    ``1:uid_max`` (RFC 7162 3.2.5.2: the client knows every UID up to
    UIDNEXT-1).  Empty when ``uid_max`` is 0."""
    if uid_max < 1:
        return []
    if uids is None:
        return [(1, uid_max)]
    bounded = []
    for a, b in uids.ranges:
        lo, hi = (uid_max if a == STAR else a), (uid_max if b == STAR else b)
        lo, hi = min(lo, hi), min(max(lo, hi), uid_max)
        if lo <= hi:
            bounded.append((lo, hi))
    return merged(bounded)


def contains(ranges: Ranges, number: int) -> bool:
    index = bisect_left(ranges, (number + 1,)) - 1
    return index >= 0 and ranges[index][0] <= number <= ranges[index][1]


def missing(ranges: Ranges, present: Sequence[int]) -> Ranges:
    """The parts of ``ranges`` holding none of the sorted ``present`` UIDs."""
    out: Ranges = []
    for lo, hi in ranges:
        at = bisect_left(present, lo)
        cursor = lo
        while at < len(present) and present[at] <= hi:
            if present[at] > cursor:
                out.append((cursor, present[at] - 1))
            cursor = present[at] + 1
            at += 1
        if cursor <= hi:
            out.append((cursor, hi))
    return out


def above(ranges: Ranges, bound: int) -> Ranges:
    """The parts of ``ranges`` above ``bound``."""
    return [(max(lo, bound + 1), hi) for lo, hi in ranges if hi > bound]


def _numbers(seqs: SequenceSet) -> Iterator[int]:
    for lo, hi in seqs.ranges:
        yield from range(lo, hi + 1)


def _count(seqs: SequenceSet) -> int:
    return sum(hi - lo + 1 for lo, hi in seqs.ranges)


def _ascending(seqs: SequenceSet) -> bool:
    last = 0
    for lo, hi in seqs.ranges:
        if lo <= last or hi < lo:
            return False
        last = hi
    return True


def seq_match_problem(seq_match: tuple[SequenceSet, SequenceSet]) -> str | None:
    """Why message sequence match data is unusable (answered BAD), else None:
    both sets must be ascending and pair up one to one (RFC 7162 3.2.5.2)."""
    seqs, uids = seq_match
    if not (_ascending(seqs) and _ascending(uids)):
        return "sequence match data must be in ascending order"
    if _count(seqs) != _count(uids):
        return "sequence match data sets differ in length"
    return None


def seq_match_bound(
    seq_match: tuple[SequenceSet, SequenceSet], exists: int, uid_of: Callable[[int], int]
) -> int:
    """The largest UID below which the client's picture has provably lost
    nothing (0 if none): RFC 7162 3.2.5.2.

    If message number ``n`` still has the UID ``u`` the client pairs it
    with, exactly ``n`` messages have a UID up to ``u`` now as then; no UID
    that low can be added later (UIDs only grow), so none of them was
    expunged.  The pairs are checked in ascending order up to the first
    that no longer matches."""
    bound = 0
    for seq, uid in zip(_numbers(seq_match[0]), _numbers(seq_match[1]), strict=False):
        if seq > exists or uid_of(seq) != uid:
            break
        bound = uid
    return bound


def vanished_lines(ranges: Ranges, *, earlier: bool) -> list[bytes]:
    """``* VANISHED [(EARLIER)] uid-set`` lines (RFC 7162 3.2.10)."""
    label = b"* VANISHED (EARLIER) " if earlier else b"* VANISHED "
    out = []
    for start in range(0, len(ranges), VANISHED_RANGES_PER_LINE):
        part = ranges[start : start + VANISHED_RANGES_PER_LINE]
        text = ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in part)
        out.append(label + text.encode() + b"\r\n")
    return out


def uids_to_ranges(uids: Sequence[int]) -> Ranges:
    return merged([(uid, uid) for uid in uids])
