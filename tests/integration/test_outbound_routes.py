"""MX resolution (RFC 5321 5.1, RFC 7505) against the test DNS server."""

from __future__ import annotations

import pytest
import trio

from mailstack.config import DnsConfig
from mailstack.dns import async_resolver
from mailstack.smtp import routes
from tests.support.dns_server import Zone, serve_dns


async def test_mx_routes() -> None:
    zone = Zone()
    zone.add("pref.test", "MX", "20 backup.pref.test.", "10 primary.pref.test.")
    zone.add("bare.test", "A", "127.0.0.5")  # no MX: the domain is its own host
    zone.add("bare.test", "AAAA", "::1")
    zone.add("null.test", "MX", "0 .")
    zone.add("noaddr.test", "TXT", '"v=spf1 -all"')
    zone.fail("servfail.test")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            endpoint = await nursery.start(serve_dns, zone)
            resolver = async_resolver(DnsConfig(nameservers=(endpoint,), timeout_seconds=2.0))
            hosts = await routes.mx_hosts(resolver, "pref.test")
            assert [(h.name, h.preference) for h in hosts] == [
                ("primary.pref.test", 10),
                ("backup.pref.test", 20),
            ]
            [bare] = await routes.mx_hosts(resolver, "bare.test")
            assert bare.name == "bare.test"
            assert await routes.host_addresses(resolver, "bare.test") == ["127.0.0.5", "::1"]
            assert await routes.host_addresses(resolver, "[IPv6:::1]") == ["::1"]
            assert [h.name for h in await routes.mx_hosts(resolver, "[127.0.0.9]")] == ["127.0.0.9"]
            with pytest.raises(routes.RoutePermanentError) as null:
                await routes.mx_hosts(resolver, "null.test")
            assert null.value.reply.code == 556 and null.value.reply.enhanced == "5.1.10"
            with pytest.raises(routes.RoutePermanentError) as missing:
                await routes.mx_hosts(resolver, "nowhere.test")
            assert missing.value.reply.enhanced == "5.1.2"
            with pytest.raises(routes.RoutePermanentError):
                await routes.host_addresses(resolver, "noaddr.test")
            with pytest.raises(routes.RouteTemporaryError) as servfail:
                await routes.mx_hosts(resolver, "servfail.test")
            assert servfail.value.reply.code == 451
            nursery.cancel_scope.cancel()
