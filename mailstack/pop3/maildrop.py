"""PURE snapshot of a POP3 maildrop: numbering, deletion marks, UIDL.

RFC 1939 3 and 5: the maildrop is fixed when the session enters the
TRANSACTION state.  Messages are numbered 1..n in UID order; a message that
arrives later is not part of this session, and DELE only *marks* a message,
which the UPDATE state (after QUIT) removes.  Numbers never shift during a
session, so a deleted message keeps its number and is simply refused.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MaildropMessage:
    number: int  # 1-based message-number of this session
    uid: int  # IMAP UID in the INBOX
    size: int  # octets as sent by RETR, before byte-stuffing (RFC 1939 11)
    content_id: int  # key for Store.read_content
    unique_id: str  # UIDL value, RFC 1939 7


class NoSuchMessage(Exception):
    """The message-number is out of range or the message is marked deleted;
    ``str()`` is the text after ``-ERR``."""


def unique_id(uidvalidity: int, uid: int) -> str:
    """RFC 1939 7: a unique-id is 1-70 characters in 0x21-0x7E and must stay
    the same across sessions.  UIDVALIDITY.UID is exactly IMAP's identity of
    a message (RFC 9051 2.3.1.1): if UIDVALIDITY changes (the INBOX was
    recreated), every id changes and clients fetch again, which is correct."""
    return f"{uidvalidity}.{uid}"


class Maildrop:
    def __init__(self, uidvalidity: int, entries: list[tuple[int, int, int]]) -> None:
        """``entries``: (uid, size, content_id) in ascending UID order."""
        self.uidvalidity = uidvalidity
        self._messages = [
            MaildropMessage(
                number=index,
                uid=uid,
                size=size,
                content_id=content_id,
                unique_id=unique_id(uidvalidity, uid),
            )
            for index, (uid, size, content_id) in enumerate(entries, start=1)
        ]
        self._deleted: set[int] = set()  # message-numbers marked by DELE
        self._gone: set[int] = set()  # uids removed by another session (IMAP)

    def __len__(self) -> int:
        return len(self._messages)

    def stat(self) -> tuple[int, int]:
        """(count, octets) of the messages not marked deleted (RFC 1939 5 STAT)."""
        live = self.live()
        return len(live), sum(m.size for m in live)

    def live(self) -> list[MaildropMessage]:
        """Messages not marked deleted, in number order (LIST/UIDL listings)."""
        return [m for m in self._messages if m.number not in self._deleted]

    def get(self, number: int) -> MaildropMessage:
        if not 1 <= number <= len(self._messages):
            raise NoSuchMessage("no such message")
        if number in self._deleted:
            raise NoSuchMessage(f"message {number} already deleted")
        return self._messages[number - 1]

    def delete(self, number: int) -> None:
        self._deleted.add(self.get(number).number)

    def reset(self) -> None:
        """RSET: unmark every message (RFC 1939 5)."""
        self._deleted.clear()

    def marked_uids(self) -> tuple[int, ...]:
        """UIDs to remove in the UPDATE state."""
        return tuple(self._messages[n - 1].uid for n in sorted(self._deleted))

    def read_ahead(
        self, message: MaildropMessage, max_messages: int, max_bytes: int
    ) -> list[MaildropMessage]:
        """``message`` and the live messages after it, as many as fit in
        ``max_messages`` and ``max_bytes`` (``message`` itself always): what
        a client retrieving the whole maildrop will ask for next."""
        batch = [message]
        total = message.size
        for candidate in self._messages[message.number :]:
            if candidate.number in self._deleted or candidate.uid in self._gone:
                continue
            if len(batch) >= max_messages or total + candidate.size > max_bytes:
                break
            batch.append(candidate)
            total += candidate.size
        return batch

    def uids(self) -> list[int]:
        """Every UID of the snapshot, deleted-marked or not."""
        return [m.uid for m in self._messages]

    def mark_gone(self, uid: int) -> None:
        """Another session expunged this message: it stays numbered (numbers
        must not shift), but retrieving it fails."""
        self._gone.add(uid)

    def is_gone(self, message: MaildropMessage) -> bool:
        return message.uid in self._gone
