"""TLS helpers for tests that check which certificate a listener serves."""

from __future__ import annotations

import ssl

import trio
from cryptography import x509


async def served_dns_names(host: str, port: int, context: ssl.SSLContext) -> list[str]:
    """The DNS names of the certificate a fresh TLS connection is given."""
    tcp = await trio.open_tcp_stream(host, port)
    stream = trio.SSLStream(tcp, context, server_hostname="localhost")
    await stream.do_handshake()
    der = stream.getpeercert(binary_form=True)
    await stream.aclose()
    assert der is not None
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return [str(n) for n in san.value.get_values_for_type(x509.DNSName)]
