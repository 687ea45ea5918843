"""Where mail for a domain goes: MX lookup (RFC 5321 5.1) through the
configured resolver (mailstack.dns), null MX (RFC 7505), host addresses.

A lookup that cannot be answered now (timeout, SERVFAIL) is a
:class:`RouteTemporaryError`; an answer that says the domain takes no mail
(NXDOMAIN, null MX) is a :class:`RoutePermanentError`.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX

from mailstack.smtp.replies import Reply


class RouteError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


class RouteTemporaryError(RouteError):
    pass


class RoutePermanentError(RouteError):
    pass


@dataclass(frozen=True, slots=True)
class Host:
    name: str  # for TLS verification and the DSN's Remote-MTA
    preference: int


def _literal(domain: str) -> str | None:
    """The IP address of an address literal ``[192.0.2.1]`` / ``[IPv6:...]``."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


async def mx_hosts(resolver: dns.asyncresolver.Resolver, domain: str) -> list[Host]:
    """The hosts to try for ``domain``, best preference first (equal
    preferences shuffled, RFC 5321 5.1)."""
    literal = _literal(domain)
    if literal is not None:
        return [Host(literal, 0)]
    try:
        answer = await resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise RoutePermanentError(
            Reply(550, "5.1.2", f"domain {domain} does not exist (NXDOMAIN)")
        ) from None
    except dns.resolver.NoAnswer:
        # RFC 5321 5.1: no MX records -> the domain itself is the host.
        return [Host(domain, 0)]
    except dns.exception.DNSException as exc:
        raise RouteTemporaryError(
            Reply(451, "4.4.3", f"MX lookup for {domain} failed: {exc}")
        ) from None
    records = [rdata for rdata in answer if isinstance(rdata, MX)]
    if any(r.exchange == dns.name.root for r in records):
        # RFC 7505 3: a null MX says the domain accepts no mail.
        raise RoutePermanentError(
            Reply(556, "5.1.10", f"domain {domain} accepts no mail (null MX)")
        )
    random.shuffle(records)
    records.sort(key=lambda r: r.preference)
    return [Host(r.exchange.to_text(omit_final_dot=True), r.preference) for r in records]


async def host_addresses(resolver: dns.asyncresolver.Resolver, host: str) -> list[str]:
    """IPv4 then IPv6 addresses of ``host`` (an IP or address literal as is).

    Raises RouteTemporaryError when neither lookup answers and
    RoutePermanentError when the name has no address at all."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    addresses: list[str] = []
    failures: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(host, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as exc:
            failures.append(str(exc))
            continue
        addresses += [rdata.to_text() for rdata in answer]
    if addresses:
        return addresses
    if failures:
        raise RouteTemporaryError(
            Reply(451, "4.4.3", f"address lookup for {host} failed: {failures[0]}")
        )
    raise RoutePermanentError(Reply(550, "5.1.2", f"host {host} has no address"))
