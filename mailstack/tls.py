"""Server TLS: the SSLContext every listener uses, reloadable at run time.

With ``[tls] cert_file``/``key_file`` set, those files are loaded (and
re-read by :meth:`TlsProvider.reload`, which ``service.run`` calls on SIGHUP,
e.g. after certbot renewed them).  Without them, a self-signed certificate for
``hostname``, ``localhost`` and the loopback addresses is generated once in
``data_dir/tls`` and reused: enough for ``mailstack dev`` and test systems,
not for a public server.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailstack.config import Config, ConfigError

logger = logging.getLogger("mailstack.tls")

# Generated certificates: long enough not to expire under a test system,
# renewed automatically when they do (or when hostname changes).
DEV_CERT_DAYS = 825


def build_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context; TLS 1.2 is the floor (RFC 8996 deprecates 1.0/1.1)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def describe_certificate(cert_file: Path) -> str:
    """One log-friendly line: subject, names and expiry of the leaf certificate."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    expires = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"subject={cert.subject.rfc4514_string()} names={','.join(names)} expires={expires}"


def _san_for(hostname: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for name in dict.fromkeys([hostname, "localhost", "127.0.0.1", "::1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return names


def _dev_certificate_usable(cert_file: Path, key_file: Path, hostname: str) -> bool:
    if not (cert_file.exists() and key_file.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    now = datetime.datetime.now(datetime.UTC)
    return cert.not_valid_after_utc > now + datetime.timedelta(days=1) and set(
        _san_for(hostname)
    ) <= set(san)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (temp file + rename) with ``mode`` from creation on,
    so the key is never readable by others, not even briefly."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ensure_dev_certificate(directory: Path, hostname: str) -> tuple[Path, Path]:
    """Generate (or reuse) a self-signed certificate; returns (cert, key) paths."""
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    if _dev_certificate_usable(cert_file, key_file, hostname):
        return cert_file, key_file
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DEV_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(_san_for(hostname)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key_file, key_pem, 0o600)
    _write_private(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    logger.warning(
        "generated a self-signed certificate for %s in %s (set [tls] for a real one)",
        hostname,
        directory,
    )
    return cert_file, key_file


class TlsProvider:
    """Owns the current server SSLContext.

    Listeners ask for :meth:`server_context` per connection, so after a
    successful :meth:`reload` every new connection gets the new certificate
    while established sessions keep theirs.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self.generated = not config.tls.cert_file
        if self.generated:
            self.cert_file, self.key_file = ensure_dev_certificate(
                config.data_path / "tls", config.hostname
            )
        else:
            self.cert_file = Path(config.tls.cert_file)
            self.key_file = Path(config.tls.key_file)
        try:
            self._context = build_context(self.cert_file, self.key_file)
            description = describe_certificate(self.cert_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            # At startup a broken certificate is a configuration mistake:
            # one clear line and exit status 2 (cli.py), not a traceback.
            raise ConfigError(
                config.source, "tls", f"cannot load {self.cert_file} / {self.key_file}: {exc}"
            ) from None
        logger.info("loaded certificate %s from %s", description, self.cert_file)

    def server_context(self) -> ssl.SSLContext:
        return self._context

    def reload(self) -> bool:
        """Re-read the certificate and key; on any error keep the current
        context and log why.  Blocking file I/O: call it from a worker thread."""
        try:
            if self.generated:
                self.cert_file, self.key_file = ensure_dev_certificate(
                    self._config.data_path / "tls", self._config.hostname
                )
            context = build_context(self.cert_file, self.key_file)
            description = describe_certificate(self.cert_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            logger.error(
                "TLS reload failed, keeping the previous certificate: %s / %s: %s",
                self.cert_file,
                self.key_file,
                exc,
            )
            return False
        self._context = context
        logger.info("reloaded certificate %s from %s", description, self.cert_file)
        return True
