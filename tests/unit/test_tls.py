"""TlsProvider: configured certificates, generated dev certificates, reload."""

from __future__ import annotations

import logging
import ssl
import stat
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from cryptography import x509

from mailstack import net
from mailstack.config import Config, ConfigError, Endpoint, TlsConfig
from mailstack.tls import TlsProvider


def write_cert(ca: trustme.CA, directory: Path, *names: str) -> Config:
    cert = ca.issue_cert(*names)
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    return Config(
        data_dir=str(directory),
        tls=TlsConfig(cert_file=str(directory / "cert.pem"), key_file=str(directory / "key.pem")),
    )


async def peer_certificate(bound: net.Bound, context: ssl.SSLContext) -> x509.Certificate:
    tcp = await trio.open_tcp_stream(bound.host, bound.port)
    client = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
    await client.do_handshake()
    der = client.getpeercert(binary_form=True)
    await client.aclose()
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def quiet(stream: trio.abc.Stream, peer: net.Peer) -> None:
    await net.receive_some(stream, 10)


def common_names(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]


async def test_reload_serves_new_certificate_to_new_connections(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    config = write_cert(ca, tmp_path, "first.test", "127.0.0.1")
    provider = TlsProvider(config)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    caplog.set_level(logging.INFO, logger="mailstack.tls")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound: list[net.Bound] = await nursery.start(
                partial(
                    net.serve_endpoints,
                    "test",
                    quiet,
                    (Endpoint("127.0.0.1", 0),),
                    tls=provider,
                    limits=net.ConnectionLimits(0, 0),
                    refuse=lambda peer: b"",
                )
            )
            before = await peer_certificate(bound[0], client)
            san = before.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            assert "first.test" in san.value.get_values_for_type(x509.DNSName)

            write_cert(ca, tmp_path, "second.test", "127.0.0.1")
            assert await trio.to_thread.run_sync(provider.reload)
            after = await peer_certificate(bound[0], client)
            san = after.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            assert "second.test" in san.value.get_values_for_type(x509.DNSName)
            assert after.serial_number != before.serial_number
            nursery.cancel_scope.cancel()
    assert any("reloaded certificate" in r.getMessage() for r in caplog.records)


def test_broken_reload_keeps_previous_context(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    provider = TlsProvider(write_cert(ca, tmp_path, "localhost"))
    old = provider.server_context()
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    with caplog.at_level(logging.ERROR, logger="mailstack.tls"):
        assert not provider.reload()
    assert provider.server_context() is old
    assert any("reload failed" in r.getMessage() for r in caplog.records)


def test_mismatched_key_on_reload_keeps_previous_context(tmp_path: Path) -> None:
    ca = trustme.CA()
    provider = TlsProvider(write_cert(ca, tmp_path, "localhost"))
    old = provider.server_context()
    other = ca.issue_cert("localhost")
    other.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    assert not provider.reload()
    assert provider.server_context() is old


def test_broken_certificate_at_startup_is_a_config_error(tmp_path: Path) -> None:
    ca = trustme.CA()
    config = write_cert(ca, tmp_path, "localhost")
    (tmp_path / "key.pem").write_text("garbage\n")
    with pytest.raises(ConfigError, match="tls"):
        TlsProvider(config)


def test_context_refuses_old_protocols(tmp_path: Path) -> None:
    provider = TlsProvider(write_cert(trustme.CA(), tmp_path, "localhost"))
    assert provider.server_context().minimum_version == ssl.TLSVersion.TLSv1_2


def test_generated_certificate_is_private_and_reused(tmp_path: Path) -> None:
    config = Config(hostname="mail.example.test", data_dir=str(tmp_path / "data"))
    provider = TlsProvider(config)
    assert provider.generated
    key = tmp_path / "data" / "tls" / "key.pem"
    cert_path = tmp_path / "data" / "tls" / "cert.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"mail.example.test", "localhost"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert common_names(cert) == ["mail.example.test"]

    pem = cert_path.read_bytes()
    TlsProvider(config)
    assert cert_path.read_bytes() == pem  # reused, not regenerated

    # A new hostname needs a certificate that names it.
    TlsProvider(config.replace(hostname="other.example.test"))
    renewed = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert common_names(renewed) == ["other.example.test"]


async def test_generated_certificate_verifies_for_localhost(tmp_path: Path) -> None:
    provider = TlsProvider(Config(data_dir=str(tmp_path)))
    client = ssl.create_default_context(cafile=str(provider.cert_file))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound: list[net.Bound] = await nursery.start(
                partial(
                    net.serve_endpoints,
                    "test",
                    quiet,
                    (Endpoint("127.0.0.1", 0),),
                    tls=provider,
                    limits=net.ConnectionLimits(0, 0),
                    refuse=lambda peer: b"",
                )
            )
            cert = await peer_certificate(bound[0], client)
            assert common_names(cert) == ["localhost"]
            nursery.cancel_scope.cancel()
