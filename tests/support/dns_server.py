"""A tiny authoritative DNS server for tests (UDP and TCP on one loopback
port), answering from a dict, so outbound delivery and SPF/DKIM/DMARC tests
resolve test domains through ``[dns] nameservers`` without the internet.

    zone = Zone()
    zone.add("example.test", "MX", "10 mx.example.test.")
    zone.add("mx.example.test", "A", "127.0.0.1")
    zone.add("example.test", "TXT", txt("v=spf1 ip4:127.0.0.1 -all"))
    zone.fail("broken.test")                  # SERVFAIL: a temporary error
    endpoint = await nursery.start(serve_dns, zone)
    config = config.replace(dns=DnsConfig(nameservers=(endpoint,)))

A name with records of other types answers NOERROR with no data; an unknown
name answers NXDOMAIN.  Changing the zone while serving takes effect at once.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from functools import partial

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import trio

from mailstack.config import Endpoint

TTL = 60


def txt(value: str) -> str:
    """TXT rdata text for ``value``, split into strings of at most 255
    characters (RFC 1035 3.3.14; DKIM keys are longer, RFC 6376 3.6.2.2)."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


@dataclass
class Zone:
    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    queries: list[tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def _name(name: str) -> str:
        return name.lower().rstrip(".") + "."

    def add(self, name: str, rdtype: str, *rdatas: str) -> None:
        self.records.setdefault((self._name(name), rdtype.upper()), []).extend(rdatas)

    def remove(self, name: str, rdtype: str) -> None:
        self.records.pop((self._name(name), rdtype.upper()), None)

    def fail(self, name: str) -> None:
        self.failing.add(self._name(name))

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            name = question.name.to_text().lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            if name in self.failing:
                response.set_rcode(dns.rcode.SERVFAIL)
                continue
            rdatas = self.records.get((name, rdtype))
            if rdatas:
                response.answer.append(
                    dns.rrset.from_text_list(
                        question.name, TTL, dns.rdataclass.IN, question.rdtype, rdatas
                    )
                )
            elif not any(key_name == name for key_name, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
        return response


def _wire(zone: Zone, data: bytes, max_size: int | None) -> bytes | None:
    try:
        query = dns.message.from_wire(data)
    except dns.exception.DNSException:
        return None
    response = zone.answer(query)
    if max_size is None:
        return response.to_wire()
    limit = max(512, query.payload) if query.edns >= 0 else 512
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        # RFC 1035 4.2.1: too big for UDP -> TC set, the client retries on TCP.
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.TC
        return truncated.to_wire()


async def _serve_tcp_client(zone: Zone, stream: trio.SocketStream) -> None:
    async with stream:
        buffer = b""
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= 2:
                (length,) = struct.unpack("!H", buffer[:2])
                if len(buffer) < 2 + length:
                    break
                reply = _wire(zone, buffer[2 : 2 + length], None)
                buffer = buffer[2 + length :]
                if reply is not None:
                    await stream.send_all(struct.pack("!H", len(reply)) + reply)


async def serve_dns(
    zone: Zone, *, task_status: trio.TaskStatus[Endpoint] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``zone`` on 127.0.0.1 (UDP and TCP, same port) until cancelled."""
    while True:
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        try:
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
            break
        except OSError:  # the TCP port of that number is taken: try another
            udp.close()
    with udp:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, partial(_serve_tcp_client, zone), listeners)
            task_status.started(Endpoint("127.0.0.1", port))
            while True:
                data, peer = await udp.recvfrom(65535)
                reply = _wire(zone, data, 512)
                if reply is not None:
                    await udp.sendto(reply, peer)
