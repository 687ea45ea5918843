"""SPF through pyspf with our DNS driver, against the test DNS server: the
mechanisms that make lookups of their own (a, mx, include) use it too."""

from __future__ import annotations

import pytest
import trio

from mailstack.config import DnsConfig
from mailstack.dns import sync_resolver
from mailstack.smtp import spf_check
from tests.support.dns_server import Zone, serve_dns, txt


@pytest.fixture
def zone() -> Zone:
    zone = Zone()
    zone.add("example.test", "TXT", txt("v=spf1 a mx include:_spf.partner.test -all"))
    zone.add("example.test", "A", "192.0.2.1")
    zone.add("example.test", "MX", "10 mx.example.test.")
    zone.add("mx.example.test", "A", "192.0.2.2")
    zone.add("_spf.partner.test", "TXT", txt("v=spf1 ip4:198.51.100.0/24 ?all"))
    zone.add("twice.test", "TXT", txt("v=spf1 -all"), txt("v=spf1 +all"))
    zone.add("broken-include.test", "TXT", txt("v=spf1 include:down.test -all"))
    zone.fail("down.test")
    return zone


async def test_results_through_the_configured_resolver(zone: Zone) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            endpoint = await nursery.start(serve_dns, zone)
            resolver = sync_resolver(DnsConfig(nameservers=(endpoint,), timeout_seconds=2))

            def check(ip: str, sender: str, helo: str = "mx.example.test") -> tuple[str, str]:
                result = spf_check.check(resolver, ip, sender, helo, timeout=5)
                return result.result, result.domain

            def run_all() -> list[tuple[str, str]]:
                return [
                    check("192.0.2.1", "a@example.test"),  # a
                    check("192.0.2.2", "a@example.test"),  # mx
                    check("198.51.100.7", "a@Example.TEST"),  # include, case-insensitive
                    check("203.0.113.9", "a@example.test"),  # -all
                    check("192.0.2.1", "a@twice.test"),  # RFC 7208 4.5: two records
                    check("192.0.2.1", "a@broken-include.test"),  # SERVFAIL below
                    check("192.0.2.1", "a@nowhere.test"),  # no record
                    check("192.0.2.2", "", helo="example.test"),  # null sender: HELO
                ]

            assert await trio.to_thread.run_sync(run_all) == [
                ("pass", "example.test"),
                ("pass", "example.test"),
                ("pass", "example.test"),
                ("fail", "example.test"),
                ("permerror", "twice.test"),
                ("temperror", "broken-include.test"),
                ("none", "nowhere.test"),
                ("pass", "example.test"),
            ]
            nursery.cancel_scope.cancel()
    assert ("mx.example.test.", "A") in zone.queries  # asked our server, not the system's


@pytest.mark.parametrize(
    ("helo", "checkable"),
    [("mx.example.test", True), ("[192.0.2.1]", False), ("localhost", False), ("", False)],
)
def test_only_a_fully_qualified_helo_is_checked(helo: str, checkable: bool) -> None:
    assert spf_check.helo_is_checkable(helo) is checkable
