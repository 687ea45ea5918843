"""DKIM signatures on submitted mail (RFC 6376 rsa-sha256, RFC 8463
ed25519-sha256) with dkimpy.

Which header fields are signed follows RFC 6376 5.4.1 (the fields that
carry the message's meaning, never trace fields); the singletons among them
are signed once more than they occur (RFC 6376 5.4.2 "oversigning", 8.15),
so nobody can add a second From, Subject or To that a reader would see
while the signature still verifies.
"""

from __future__ import annotations

import dkim

from mailstack.smtp.author import author_domain, header_fields
from mailstack.smtp.dkim_keys import SigningKey
from mailstack.smtp.dmarc import organizational_domain

# RFC 6376 5.4.1: sign what a reader sees and what the MUA interprets.
SIGNED = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-id",
    "content-description", "resent-date", "resent-from", "resent-sender", "resent-to",
    "resent-cc", "resent-message-id", "in-reply-to", "references", "list-id",
    "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner",
    "list-archive",
)  # fmt: skip
# Fields RFC 5322 3.6 (and MIME) allow at most once: one extra entry in h=
# each, present or not, so none can be added after signing.
OVERSIGNED = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "in-reply-to", "references", "mime-version", "content-type",
    "content-transfer-encoding",
)  # fmt: skip
# relaxed/relaxed survives the header re-folding and trailing-space changes
# that relays commonly make (RFC 6376 3.4).
CANONICALIZATION = (b"relaxed", b"relaxed")


def signed_fields(content: bytes) -> list[bytes]:
    present = [name for name, _ in header_fields(content) if name in SIGNED]
    return [name.encode() for name in present + list(OVERSIGNED)]


class DkimSigner:
    """The configured keys by domain; ``sign`` is CPU work, run it in a thread."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self._by_domain: dict[str, list[SigningKey]] = {}
        for key in keys:
            self._by_domain.setdefault(key.domain, []).append(key)

    def keys_for(self, content: bytes, sender: str) -> list[SigningKey]:
        """The keys of the From domain, provided that domain is the envelope
        sender's or shares its organizational domain.  Submission accepts
        only MAIL FROM addresses the account owns (RFC 6409 6.1), so this
        keeps one user from getting mail signed for another hosted domain."""
        domain = author_domain(content)
        keys = self._by_domain.get(domain, []) if domain else []
        sender_domain = sender.rpartition("@")[2].lower().rstrip(".")
        if not keys or not sender_domain:
            return []
        if organizational_domain(sender_domain) != organizational_domain(keys[0].domain):
            return []
        return keys

    def has_keys(self, domain: str | None) -> bool:
        return bool(domain) and domain in self._by_domain

    def sign(self, content: bytes, sender: str) -> bytes:
        """DKIM-Signature fields (CRLF-terminated) to put on top of
        ``content``: one per key of the From domain, none without keys."""
        keys = self.keys_for(content, sender)
        if not keys:
            return b""
        include = signed_fields(content)
        signatures = b""
        for key in keys:
            signatures += dkim.sign(
                content,
                key.selector.encode("ascii"),
                key.domain.encode("ascii"),
                key.private,
                signature_algorithm=key.signature_algorithm,
                canonicalize=CANONICALIZATION,
                include_headers=include,
                linesep=b"\r\n",
            )
        return signatures
