"""Blocking DNS lookups for the SPF, DKIM and DMARC libraries, through the
resolver built from ``[dns]`` (mailstack.dns.sync_resolver).  Run them in a
worker thread; a temporary failure (timeout, SERVFAIL, no server answering)
raises DnsTemporaryError, which the checks report as temperror (RFC 8601
2.7), while a name with no such record is simply "no record"."""

from __future__ import annotations

from collections.abc import Callable

import dns.exception
import dns.resolver


class DnsTemporaryError(Exception):
    """The lookup could not be completed now; a later try may succeed."""


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[bytes]:
    """Each TXT record at ``name``, its strings joined (RFC 7208 3.3,
    RFC 6376 3.6.2.2); [] when there is none."""
    try:
        answer = resolver.resolve(name, "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise DnsTemporaryError(f"{name}: {exc}") from None
    return [b"".join(rdata.strings) for rdata in answer]


def dkim_dnsfunc(resolver: dns.resolver.Resolver) -> Callable[..., bytes | None]:
    """dkimpy's ``dnsfunc(name, timeout=...)``: the key record's text or None."""

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        records = txt_records(resolver, text)
        return records[0] if records else None

    return lookup
