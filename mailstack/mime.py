"""PURE message analysis, done once when a message is stored.

``analyze(raw)`` computes everything later readers need without re-parsing
the message: the IMAP ENVELOPE and BODYSTRUCTURE (as JSON-compatible nested
lists, serialized by the IMAP layer) and the decoded header fields used by
SEARCH, SORT, THREAD and the WebSocket API.

INTERFACE: the IMAP work owns the ENVELOPE/BODYSTRUCTURE builders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MessageAnalysis:
    envelope: Any  # JSON-compatible, see mailstack.imap for the shape
    bodystructure: Any  # JSON-compatible, see mailstack.imap for the shape
    # Decoded (RFC 2047) header values keyed by lower-case field name:
    # "subject", "from", "to", "cc", "bcc", "date", "message-id",
    # "in-reply-to", "references", "reply-to", "sender".
    headers: dict[str, str]


def analyze(raw: bytes) -> MessageAnalysis:
    """Never raises for any input bytes: malformed MIME yields a best-effort
    structure (RFC 9051 says the server must still answer FETCH)."""
    raise NotImplementedError
