"""PURE per-session view of the selected mailbox (RFC 9051 2.3.1, 7.4.1, 5.2).

Message sequence numbers belong to the session: other sessions' changes are
queued here and only become visible when :meth:`flush` is called at a moment
the RFC allows.  RFC 9051 7.4.1 / 3501 7.4.1: EXPUNGE must not be sent while
a FETCH, STORE or SEARCH is in progress, nor in reply to one — the numbers
the client used would shift under it — so the caller passes
``expunges_allowed=False`` after those commands (EXISTS and FLAGS updates are
still fine then).

Memory matters (an idle session costs what its view costs), so the view keeps
only the UIDs, as runs of consecutive UIDs, and no flags: flags are read from
the store when a command needs them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from mailstack.imap.responses import flag_list
from mailstack.imap.sequence import from_numbers


class UidMap:
    """Sorted UIDs as runs (first UID, count): sequence number <-> UID in O(log runs)."""

    def __init__(self, uids: Iterable[int] = ()) -> None:
        self._build(uids)

    def _build(self, uids: Iterable[int]) -> None:
        self._firsts: list[int] = []
        self._counts: list[int] = []
        for uid in uids:
            if self._firsts and uid == self._firsts[-1] + self._counts[-1]:
                self._counts[-1] += 1
            else:
                self._firsts.append(uid)
                self._counts.append(1)
        self._reindex()

    def _reindex(self) -> None:
        self._offsets: list[int] = []
        total = 0
        for count in self._counts:
            self._offsets.append(total)
            total += count
        self._len = total

    def __len__(self) -> int:
        return self._len

    @property
    def max(self) -> int:
        return self._firsts[-1] + self._counts[-1] - 1 if self._firsts else 0

    def seq_of(self, uid: int) -> int | None:
        run = bisect_right(self._firsts, uid) - 1
        if run >= 0 and uid < self._firsts[run] + self._counts[run]:
            return self._offsets[run] + uid - self._firsts[run] + 1
        return None

    def uid_of(self, seq: int) -> int:
        if not 1 <= seq <= self._len:
            raise IndexError(seq)
        run = bisect_right(self._offsets, seq - 1) - 1
        return self._firsts[run] + seq - 1 - self._offsets[run]

    def __contains__(self, uid: int) -> bool:
        return self.seq_of(uid) is not None

    def to_list(self) -> list[int]:
        out: list[int] = []
        for first, count in zip(self._firsts, self._counts, strict=True):
            out.extend(range(first, first + count))
        return out

    def add(self, uid: int) -> None:
        if uid in self:
            return
        if uid > self.max:
            if self._firsts and uid == self.max + 1:
                self._counts[-1] += 1
            else:
                self._firsts.append(uid)
                self._counts.append(1)
            self._reindex()
            return
        # Out of order (rare: a UID below ones already seen): rebuild.
        uids = self.to_list()
        uids.append(uid)
        uids.sort()
        self._build(uids)

    def remove(self, uid: int) -> None:
        run = bisect_right(self._firsts, uid) - 1
        if run < 0 or uid >= self._firsts[run] + self._counts[run]:
            return
        first, count = self._firsts[run], self._counts[run]
        before, after = uid - first, first + count - uid - 1
        pieces = [(f, n) for f, n in ((first, before), (uid + 1, after)) if n > 0]
        self._firsts[run : run + 1] = [f for f, _ in pieces]
        self._counts[run : run + 1] = [n for _, n in pieces]
        self._reindex()


class MailboxView:
    def __init__(self, mailbox_id: int, uids: Iterable[int]) -> None:
        self.mailbox_id = mailbox_id
        self.uids = UidMap(uids)
        self._new: set[int] = set()
        # UID -> MODSEQ of the expunge (0 when unknown), until announced.
        self._expunged: dict[int, int] = {}
        # UID -> (flags, MODSEQ of the change; 0 when unknown).
        self._flag_changes: dict[int, tuple[frozenset[str], int]] = {}
        # Flags this session set itself and already reported: the store's
        # echo of the same change is not reported again.
        self._own: dict[int, frozenset[str]] = {}

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        return self.uids.seq_of(uid)

    def uid_of(self, seq: int) -> int:
        return self.uids.uid_of(seq)

    # -- changes reported by the store -----------------------------------
    def message_added(self, uid: int) -> None:
        if uid not in self.uids and uid not in self._expunged:
            self._new.add(uid)

    def message_expunged(self, uid: int, modseq: int = 0) -> None:
        if uid in self._new:
            self._new.discard(uid)
        elif uid in self.uids:
            self._expunged[uid] = modseq

    def flags_changed(self, uid: int, flags: frozenset[str], modseq: int = 0) -> None:
        if self._own.get(uid) == flags:
            del self._own[uid]
            return
        if uid in self.uids and uid not in self._expunged:
            self._flag_changes[uid] = (flags, modseq)

    # -- this session's own changes, already reported to the client -------
    def own_flags(self, uid: int, flags: frozenset[str]) -> None:
        self._flag_changes.pop(uid, None)
        if len(self._own) > 10_000:
            self._own.clear()  # echoes not seen (no watcher): forget them
        self._own[uid] = flags

    def remove_now(self, uids: Iterable[int]) -> list[int]:
        """Expunge ``uids`` at once (this session's EXPUNGE/MOVE); returns the
        sequence numbers to report, in the order the EXPUNGE responses must go."""
        numbers: list[int] = []
        for uid in sorted(set(uids), reverse=True):
            seq = self.uids.seq_of(uid)
            if seq is None:
                continue
            numbers.append(seq)
            self.uids.remove(uid)
            self._expunged.pop(uid, None)
            self._flag_changes.pop(uid, None)
        return numbers

    def count_agrees(self, messages: int) -> bool:
        """Whether the store's message count matches what this view knows,
        announced or queued (else changes are still on their way)."""
        return len(self.uids) + len(self._new) - len(self._expunged) == messages

    @property
    def has_pending(self) -> bool:
        return bool(self._new or self._expunged or self._flag_changes)

    def flush(
        self, *, expunges_allowed: bool, condstore: bool = False, qresync: bool = False
    ) -> list[bytes]:
        """Untagged responses announcing queued changes, applied to the view.

        With CONDSTORE on, flag changes carry their MODSEQ (RFC 7162 3.2.4);
        with QRESYNC on, expunges are one VANISHED response (RFC 7162 3.2.10)."""
        out: list[bytes] = []
        if expunges_allowed and self._expunged:
            gone = sorted(self._expunged)
            numbers = self.remove_now(gone)
            if qresync:
                out.append(b"* VANISHED %s\r\n" % from_numbers(gone).encode())
            else:
                out += [b"* %d EXPUNGE\r\n" % seq for seq in numbers]
            self._expunged.clear()
        for uid, (flags, modseq) in sorted(self._flag_changes.items()):
            number = self.uids.seq_of(uid)
            if number is not None:
                tail = b" MODSEQ (%d)" % modseq if condstore and modseq else b""
                out.append(
                    b"* %d FETCH (UID %d FLAGS %s%s)\r\n" % (number, uid, flag_list(flags), tail)
                )
        self._flag_changes.clear()
        waiting = [modseq for modseq in self._expunged.values() if modseq]
        if condstore and waiting:
            # RFC 7162 errata 1810: MODSEQs this session sent may be above an
            # expunge it may not announce yet; a client that disconnects now
            # must resync from below that expunge.
            out.append(b"* OK [HIGHESTMODSEQ %d] Expunges pending\r\n" % (min(waiting) - 1))
        if self._new:
            for uid in sorted(self._new):
                self.uids.add(uid)
            self._new.clear()
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
        return out
