"""mailstack.dns resolvers follow [dns] nameservers, checked against the
test DNS server (UDP, and TCP after truncation)."""

from __future__ import annotations

from pathlib import Path

import dns.resolver
import pytest
import trio

from mailstack.config import ConfigError, DnsConfig, load_config
from mailstack.dns import async_resolver, sync_resolver
from tests.support.dns_server import Zone, serve_dns, txt


async def test_both_resolvers_ask_the_configured_server() -> None:
    zone = Zone()
    zone.add("example.test", "MX", "10 mx1.example.test.", "20 mx2.example.test.")
    zone.add("mx1.example.test", "A", "127.0.0.1")
    long_value = "v=DKIM1; k=rsa; p=" + "A" * 600  # past 512 bytes: TCP retry
    zone.add("sel._domainkey.example.test", "TXT", txt(long_value))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoint = await nursery.start(serve_dns, zone)
            config = DnsConfig(nameservers=(endpoint,), timeout_seconds=2)
            answer = await async_resolver(config).resolve("example.test", "MX")
            assert sorted((r.preference, r.exchange.to_text()) for r in answer) == [
                (10, "mx1.example.test."),
                (20, "mx2.example.test."),
            ]
            with pytest.raises(dns.resolver.NXDOMAIN):
                await async_resolver(config).resolve("nowhere.test", "A")

            def lookup_txt() -> str:
                answer = sync_resolver(config).resolve("sel._domainkey.example.test", "TXT")
                return b"".join(next(iter(answer)).strings).decode()

            assert await trio.to_thread.run_sync(lookup_txt) == long_value
            nursery.cancel_scope.cancel()
    assert ("example.test.", "MX") in zone.queries


def test_nameservers_must_be_ip_and_port(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[dns]\nnameservers = ["ns.example.test:53"]\n')
    with pytest.raises(ConfigError, match=r"dns\.nameservers\[0\].*not an IP address"):
        load_config(str(path))
    path.write_text('[dns]\nnameservers = ["127.0.0.1"]\n')
    with pytest.raises(ConfigError, match=r"dns\.nameservers\[0\].*host:port"):
        load_config(str(path))
