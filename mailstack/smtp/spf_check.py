"""SPF (RFC 7208) of the MAIL FROM and HELO identities with pyspf, its DNS
going through our resolver.

pyspf looks names up through its module-level ``DNSLookup`` driver (it
picks one for dnspython or pydns at import); we install a driver that asks
the resolver of the calling thread's check, so ``[dns] nameservers`` and
timeouts apply, and timeouts/SERVFAIL become SPF temperror.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.resolver
import spf

_resolver: ContextVar[dns.resolver.Resolver | None] = ContextVar("spf_resolver", default=None)


def _lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[Any]:
    """pyspf's driver contract: [((name, qtype), value), ...] with TXT as a
    sequence of byte strings, MX as (preference, exchange), A/AAAA as text."""
    resolver = _resolver.get()
    if resolver is None:  # only check() below evaluates SPF, and it sets one
        raise spf.TempError("no resolver for this SPF check")
    try:
        answer = resolver.resolve(
            name, qtype, search=False, lifetime=min(timeout, resolver.lifetime)
        )
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise spf.TempError(f"DNS {exc}") from None
    values: list[Any] = []
    for rdata in answer:
        if qtype in ("A", "AAAA"):
            values.append(rdata.address)
        elif qtype == "MX":
            values.append((rdata.preference, rdata.exchange))
        elif qtype == "PTR":
            values.append(rdata.target.to_text(True))
        elif qtype in ("TXT", "SPF"):
            values.append(rdata.strings)
    return [((name, qtype), value) for value in values]


spf.DNSLookup = _lookup


@dataclass(frozen=True, slots=True)
class SpfResult:
    identity: str  # "mailfrom" or "helo" (RFC 8601 smtp.mailfrom / smtp.helo)
    domain: str
    result: str  # RFC 7208 2.6: pass fail softfail neutral none temperror permerror
    explanation: str


def check(
    resolver: dns.resolver.Resolver,
    ip: str,
    sender: str,
    helo: str,
    *,
    timeout: float,
) -> SpfResult:
    """SPF of ``sender`` (the MAIL FROM address, "" for the null
    reverse-path: then the HELO identity stands in, RFC 7208 2.4)."""
    identity = "mailfrom" if sender else "helo"
    checked = sender or f"postmaster@{helo}"
    domain = checked.rpartition("@")[2].lower()
    token = _resolver.set(resolver)
    try:
        # querytime bounds the whole evaluation (RFC 7208 4.6.4).
        query = spf.query(i=ip, s=checked, h=helo, timeout=timeout, querytime=timeout)
        result, _code, explanation = query.check()
    except spf.TempError as exc:
        result, explanation = "temperror", str(exc)
    except spf.PermError as exc:
        result, explanation = "permerror", str(exc)
    except Exception as exc:  # pyspf on hostile input (RFC 7208 2.6.7)
        result, explanation = "permerror", repr(exc)
    finally:
        _resolver.reset(token)
    return SpfResult(identity, domain, str(result), str(explanation))


def helo_is_checkable(helo: str | None) -> bool:
    """RFC 7208 2.3: only a fully-qualified HELO name can be checked (not an
    address literal, not a bare word)."""
    if not helo:
        return False
    return not helo.startswith("[") and "." in helo.strip(".")
