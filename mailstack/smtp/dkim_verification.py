"""DKIM verification (RFC 6376 6) of every signature on a received message
with dkimpy, key lookups through our resolver."""

from __future__ import annotations

import re
from dataclasses import dataclass

import dkim
import dns.resolver

from mailstack.smtp.author import header_fields
from mailstack.smtp.dns_lookups import DnsTemporaryError, dkim_dnsfunc

_TAG = re.compile(r"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)")


@dataclass(frozen=True, slots=True)
class DkimResult:
    result: str  # RFC 8601 2.7.1: pass fail temperror permerror (none: no signature)
    domain: str  # d=
    selector: str  # s=
    signature_start: str  # the first characters of b= (RFC 6008 header.b)
    reason: str


def _tags(value: str) -> dict[str, str]:
    unfolded = re.sub(r"\s+", "", value)
    return {m.group(1): m.group(2) for m in _TAG.finditer(unfolded)}


def verify_all(
    resolver: dns.resolver.Resolver, content: bytes, *, max_signatures: int, timeout: float
) -> list[DkimResult]:
    """One result per DKIM-Signature, top first, at most ``max_signatures``
    (each costs a DNS lookup and a public-key operation)."""
    signatures = [v for n, v in header_fields(content) if n == "dkim-signature"]
    lookup = dkim_dnsfunc(resolver)
    found: list[bytes] = []  # the key names whose record exists

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        record = lookup(name, timeout)
        if record is not None:
            found.append(name)
        return record

    results = []
    verifier = dkim.DKIM(content, timeout=timeout)
    for index, value in enumerate(signatures[:max_signatures]):
        tags = _tags(value)
        domain, selector = tags.get("d", "").lower(), tags.get("s", "")
        start = tags.get("b", "")[:8]
        found.clear()
        try:
            passed = verifier.verify(idx=index, dnsfunc=dnsfunc)
        except DnsTemporaryError as exc:
            results.append(DkimResult("temperror", domain, selector, start, str(exc)))
            continue
        except dkim.DKIMException as exc:
            # "body hash mismatch (got ..., expected ...)": the words suffice.
            reason = str(exc).partition(" (")[0]
            results.append(DkimResult("fail", domain, selector, start, reason))
            continue
        except Exception as exc:  # dkimpy on hostile input: not our crash
            results.append(DkimResult("permerror", domain, selector, start, repr(exc)))
            continue
        if passed:
            results.append(DkimResult("pass", domain, selector, start, ""))
        else:
            reason = "signature did not verify" if found else "no key record in DNS"
            results.append(DkimResult("fail", domain, selector, start, reason))
    return results
