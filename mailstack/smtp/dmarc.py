"""DMARC (RFC 7489): policy discovery, identifier alignment and the
policy to apply, given the SPF and DKIM results of a message.

Sans-I/O apart from the record lookup, which the caller passes in (a
function returning the TXT records at a name, raising DnsTemporaryError).
Organizational domains come from the Public Suffix List snapshot bundled
with ``publicsuffixlist`` (RFC 7489 3.2; nothing is fetched at run time).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from mailstack.smtp.dns_lookups import DnsTemporaryError

POLICIES = ("none", "quarantine", "reject")
_psl = PublicSuffixList()


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    policy: str  # p=
    subdomain_policy: str  # sp= (defaults to p=)
    dkim_strict: bool  # adkim=s
    spf_strict: bool  # aspf=s
    percent: int  # pct=


@dataclass(frozen=True, slots=True)
class DmarcResult:
    # RFC 7489 11.2: pass fail none temperror permerror
    result: str
    from_domain: str
    # The policy that applies to this message ("" without a record) and what
    # to do after pct= sampling (RFC 7489 6.6.4): none, quarantine, reject.
    policy: str = ""
    disposition: str = "none"
    reason: str = ""


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label."""
    return _psl.privatesuffix(domain.lower().rstrip(".")) or domain.lower().rstrip(".")


def aligned(identifier: str, author: str, strict: bool) -> bool:
    """RFC 7489 3.1: the same domain (strict), or the same organizational
    domain (relaxed)."""
    identifier, author = identifier.lower().rstrip("."), author.lower().rstrip(".")
    if strict:
        return identifier == author
    return organizational_domain(identifier) == organizational_domain(author)


def parse_record(text: str) -> DmarcRecord | None:
    """A DMARC record (RFC 7489 6.3/6.4), or None when ``text`` is not one or
    has no usable policy (6.6.3 step 6: an invalid p= with a reporting
    address is read as p=none; without one the record is ignored)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    # 6.4: v=DMARC1 must be the first tag.
    if not text.lstrip().startswith("v") or tags.get("v") != "DMARC1":
        return None
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        if not tags.get("rua"):
            return None
        policy = "none"
    subdomain_policy = tags.get("sp", policy).lower()
    if subdomain_policy not in POLICIES:
        subdomain_policy = policy
    percent_text = tags.get("pct", "100")
    percent = int(percent_text) if percent_text.isdigit() else 100
    return DmarcRecord(
        policy=policy,
        subdomain_policy=subdomain_policy,
        dkim_strict=tags.get("adkim", "r").lower() == "s",
        spf_strict=tags.get("aspf", "r").lower() == "s",
        percent=min(percent, 100),
    )


def _find_record(
    domain: str, lookup_txt: Callable[[str], Sequence[bytes]]
) -> tuple[DmarcRecord | None, bool]:
    """The record at _dmarc.<domain>; (record, found at the author domain itself)."""
    organizational = organizational_domain(domain)
    for candidate in dict.fromkeys((domain, organizational)):
        texts = [t.decode("utf-8", "replace") for t in lookup_txt(f"_dmarc.{candidate}")]
        records = [r for r in map(parse_record, texts) if r is not None]
        # 6.6.3 step 5: more than one record is no policy.
        if len(records) == 1:
            return records[0], candidate == domain
        if len(records) > 1:
            return None, False
    return None, False


def evaluate(
    from_domain: str | None,
    *,
    spf_result: str,
    spf_domain: str,
    dkim_passes: Sequence[str],
    lookup_txt: Callable[[str], Sequence[bytes]],
    sample: Callable[[], float] = random.random,
) -> DmarcResult:
    """The DMARC verdict for a message whose author domain is
    ``from_domain``; ``dkim_passes`` are the d= of the passing signatures."""
    if from_domain is None:
        return DmarcResult("permerror", "", reason="no single From address with a domain")
    try:
        record, at_author_domain = _find_record(from_domain, lookup_txt)
    except DnsTemporaryError as exc:
        return DmarcResult("temperror", from_domain, reason=str(exc))
    if record is None:
        return DmarcResult("none", from_domain)
    is_subdomain = not at_author_domain and organizational_domain(from_domain) != from_domain
    policy = record.subdomain_policy if is_subdomain else record.policy
    spf_aligned = spf_result == "pass" and aligned(spf_domain, from_domain, record.spf_strict)
    dkim_aligned = any(aligned(d, from_domain, record.dkim_strict) for d in dkim_passes)
    if spf_aligned or dkim_aligned:
        return DmarcResult("pass", from_domain, policy, "none")
    disposition = policy
    # 6.6.4: a message outside the pct= sample gets the next weaker policy.
    if record.percent < 100 and sample() * 100 >= record.percent:
        disposition = {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")
    return DmarcResult(
        "fail", from_domain, policy, disposition, reason="no aligned SPF or DKIM pass"
    )
