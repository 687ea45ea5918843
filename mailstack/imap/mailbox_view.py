"""PURE per-session view of the selected mailbox (RFC 9051 2.3.1, 7.4.1, 5.2).

Message sequence numbers belong to the session: other sessions' changes are
queued here and only become visible when :meth:`flush` is called at a moment
the RFC allows.  RFC 9051 7.4.1 / 3501 7.4.1: EXPUNGE must not be sent while
a FETCH, STORE or SEARCH is in progress, nor in reply to one — the numbers
the client used would shift under it — so the caller passes
``expunges_allowed=False`` after those commands (EXISTS and FLAGS updates are
still fine then).
"""

from __future__ import annotations

from bisect import bisect_left, insort

from mailstack.imap.responses import flag_list


class MailboxView:
    def __init__(self, mailbox_id: int, messages: list[tuple[int, frozenset[str]]]) -> None:
        self.mailbox_id = mailbox_id
        self.uids: list[int] = sorted(uid for uid, _ in messages)
        self.flags: dict[int, frozenset[str]] = dict(messages)
        self._new: dict[int, frozenset[str]] = {}
        self._expunged: set[int] = set()
        self._flag_changes: dict[int, frozenset[str]] = {}

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        index = bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return None

    def uid_of(self, seq: int) -> int:
        return self.uids[seq - 1]

    # -- changes reported by the store -----------------------------------
    def message_added(self, uid: int, flags: frozenset[str]) -> None:
        if uid not in self.flags and uid not in self._expunged:
            self._new[uid] = flags

    def message_expunged(self, uid: int) -> None:
        if self._new.pop(uid, None) is None and uid in self.flags:
            self._expunged.add(uid)

    def flags_changed(self, uid: int, flags: frozenset[str]) -> None:
        if uid in self._new:
            self._new[uid] = flags
        elif self.flags.get(uid) != flags and uid not in self._expunged:
            self._flag_changes[uid] = flags

    # -- this session's own changes, already reported to the client -------
    def set_flags(self, uid: int, flags: frozenset[str]) -> None:
        if uid in self.flags:
            self.flags[uid] = flags
            self._flag_changes.pop(uid, None)

    def remove_now(self, uids: list[int]) -> list[int]:
        """Expunge ``uids`` at once (this session's EXPUNGE/MOVE); returns the
        sequence numbers to report, in the order the EXPUNGE responses must go."""
        numbers: list[int] = []
        for uid in sorted(set(uids), reverse=True):
            seq = self.seq_of(uid)
            if seq is None:
                continue
            numbers.append(seq)
            del self.uids[seq - 1]
            del self.flags[uid]
            self._expunged.discard(uid)
            self._flag_changes.pop(uid, None)
        return numbers

    @property
    def has_pending(self) -> bool:
        return bool(self._new or self._expunged or self._flag_changes)

    def flush(self, *, expunges_allowed: bool, with_uid: bool = True) -> list[bytes]:
        """Untagged responses announcing queued changes, applied to the view."""
        out: list[bytes] = []
        if expunges_allowed and self._expunged:
            for seq in self.remove_now(sorted(self._expunged)):
                out.append(b"* %d EXPUNGE\r\n" % seq)
            self._expunged.clear()
        for uid, flags in sorted(self._flag_changes.items()):
            number = self.seq_of(uid)
            if number is None:
                continue
            self.flags[uid] = flags
            uid_part = b"UID %d " % uid if with_uid else b""
            out.append(b"* %d FETCH (%sFLAGS %s)\r\n" % (number, uid_part, flag_list(flags)))
        self._flag_changes.clear()
        if self._new:
            for uid, flags in self._new.items():
                insort(self.uids, uid)
                self.flags[uid] = flags
            self._new.clear()
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
        return out
