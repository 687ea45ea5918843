"""DMARC (RFC 7489) record parsing, alignment and verdicts, with the record
lookup given as a dict (the DNS path is covered by the integration tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from mailstack.smtp import dmarc
from mailstack.smtp.dns_lookups import DnsTemporaryError


def lookup_from(records: dict[str, list[str]]) -> Callable[[str], Sequence[bytes]]:
    def lookup(name: str) -> list[bytes]:
        if name in records.get("@fail", []):
            raise DnsTemporaryError(name)
        return [text.encode() for text in records.get(name, [])]

    return lookup


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v=DMARC1; p=reject", ("reject", "reject", False, False, 100)),
        (
            "v=DMARC1;p=quarantine;sp=none;adkim=s;aspf=s;pct=20",
            ("quarantine", "none", True, True, 20),
        ),
        ("v=DMARC1; p=NONE; sp=bogus", ("none", "none", False, False, 100)),
        # 6.6.3 step 6: a bad p= with a reporting address reads as p=none.
        ("v=DMARC1; p=bogus; rua=mailto:d@example.test", ("none", "none", False, False, 100)),
        ("v=DMARC1; p=reject; pct=250", ("reject", "reject", False, False, 100)),
    ],
)
def test_parse_record(text: str, expected: tuple[str, str, bool, bool, int]) -> None:
    record = dmarc.parse_record(text)
    assert record is not None
    got = (record.policy, record.subdomain_policy, record.dkim_strict, record.spf_strict)
    assert (*got, record.percent) == expected


@pytest.mark.parametrize(
    "text",
    ["v=spf1 -all", "p=reject; v=DMARC1", "v=DMARC2; p=reject", "v=DMARC1; p=bogus", ""],
)
def test_not_a_usable_record(text: str) -> None:
    assert dmarc.parse_record(text) is None


def test_organizational_domain_and_alignment() -> None:
    assert dmarc.organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert dmarc.organizational_domain("mail.example.test.") == "example.test"
    assert dmarc.aligned("bounce.example.co.uk", "example.co.uk", strict=False)
    assert not dmarc.aligned("bounce.example.co.uk", "example.co.uk", strict=True)
    assert dmarc.aligned("Example.CO.uk", "example.co.uk", strict=True)
    # Two registrations under one public suffix are different organizations.
    assert not dmarc.aligned("other.co.uk", "example.co.uk", strict=False)


def verdict(
    records: dict[str, list[str]],
    from_domain: str | None = "example.test",
    *,
    spf: tuple[str, str] = ("fail", "example.test"),
    dkim: Sequence[str] = (),
    sample: float = 0.0,
) -> dmarc.DmarcResult:
    return dmarc.evaluate(
        from_domain,
        spf_result=spf[0],
        spf_domain=spf[1],
        dkim_passes=dkim,
        lookup_txt=lookup_from(records),
        sample=lambda: sample,
    )


REJECT = {"_dmarc.example.test": ["v=DMARC1; p=reject; sp=quarantine"]}


def test_pass_by_aligned_spf_or_dkim() -> None:
    assert verdict(REJECT, spf=("pass", "bounces.example.test")).result == "pass"
    assert verdict(REJECT, dkim=["other.test", "mail.example.test"]).result == "pass"
    strict = {"_dmarc.example.test": ["v=DMARC1; p=reject; adkim=s; aspf=s"]}
    assert verdict(strict, spf=("pass", "bounces.example.test")).result == "fail"
    assert verdict(strict, dkim=["mail.example.test"]).result == "fail"
    assert verdict(strict, dkim=["example.test"]).result == "pass"


def test_fail_applies_p_and_sp() -> None:
    result = verdict(REJECT, spf=("pass", "other.test"), dkim=["other.test"])
    assert (result.result, result.policy, result.disposition) == ("fail", "reject", "reject")
    # A subdomain without its own record takes sp= of the organizational domain.
    sub = verdict(REJECT, "news.example.test")
    assert (sub.result, sub.policy, sub.disposition) == ("fail", "quarantine", "quarantine")
    # A subdomain with its own record uses that record's p=.
    own = verdict({**REJECT, "_dmarc.news.example.test": ["v=DMARC1; p=none"]}, "news.example.test")
    assert (own.policy, own.disposition) == ("none", "none")


def test_pct_sampling_weakens_the_policy_outside_the_sample() -> None:
    records = {"_dmarc.example.test": ["v=DMARC1; p=reject; pct=30"]}
    assert verdict(records, sample=0.1).disposition == "reject"
    assert verdict(records, sample=0.5).disposition == "quarantine"


def test_none_temperror_and_permerror() -> None:
    assert verdict({}).result == "none"
    two = {"_dmarc.example.test": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]}
    assert verdict(two).result == "none"  # 6.6.3: more than one record is no policy
    broken = verdict({"@fail": ["_dmarc.example.test"]})
    assert (broken.result, broken.from_domain) == ("temperror", "example.test")
    assert verdict(REJECT, None).result == "permerror"
