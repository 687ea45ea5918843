"""DNS resolvers built from ``[dns]``: every lookup goes through these so
that ``nameservers`` redirects all of them (tests, air-gapped installs).

``async_resolver`` is for trio code (dnspython picks its trio backend);
``sync_resolver`` is for libraries that do their own blocking lookups (SPF,
DKIM and DMARC checks), which the caller runs in a worker thread.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.nameserver
import dns.resolver

from mailstack.config import DnsConfig


def _configure(resolver: dns.resolver.BaseResolver, config: DnsConfig) -> None:
    if config.nameservers:
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(server.host, server.port) for server in config.nameservers
        ]
    # One lookup, retries across servers included, ends after the timeout.
    resolver.lifetime = config.timeout_seconds
    resolver.timeout = config.timeout_seconds


def async_resolver(config: DnsConfig) -> dns.asyncresolver.Resolver:
    # configure=False when nameservers are given: a host without
    # /etc/resolv.conf must not fail here.
    resolver = dns.asyncresolver.Resolver(configure=not config.nameservers)
    _configure(resolver, config)
    return resolver


def sync_resolver(config: DnsConfig) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=not config.nameservers)
    _configure(resolver, config)
    return resolver
