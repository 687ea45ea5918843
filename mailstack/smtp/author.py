"""The author domain of a message: the domain of its one RFC5322.From
address, which DKIM signing picks keys by and DMARC aligns against."""

from __future__ import annotations

from mailstack import mime


def header_fields(content: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) of the message's header fields."""
    return mime.parse_header_fields(content[: mime.split_header(content, 0, len(content))])


def author_domain(content: bytes) -> str | None:
    """The lower-case domain of the single From address, or None when there
    is no From field, more than one, or it does not hold exactly one address
    with a domain (RFC 7489 6.6.1: such messages have no author domain to
    evaluate)."""
    values = [value for name, value in header_fields(content) if name == "from"]
    if len(values) != 1:
        return None
    addresses = mime.parse_address_list(values[0]) or []
    # Group syntax yields [None, None, name, None] markers with no host.
    mailboxes = [a for a in addresses if a[3] is not None]
    if len(mailboxes) != 1:
        return None
    domain = mailboxes[0][3]
    if not domain or domain == "MISSING_DOMAIN" or domain.startswith("["):
        return None
    return domain.rstrip(".").lower()
