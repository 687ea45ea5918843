"""DKIM private keys: generation (`mailstack dkim keygen`), loading from
``[[dkim.keys]]`` and the public key's TXT record (RFC 6376 3.6.1).

Keys are PEM files (PKCS#8, as ``openssl genpkey`` writes them); the
algorithm follows from the key: RSA signs rsa-sha256 (RFC 6376 3.3,
at least 1024 bits per RFC 8301 3.2), Ed25519 signs ed25519-sha256
(RFC 8463).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailstack.config import Config, ConfigError, DkimKey

ALGORITHMS = ("rsa", "ed25519")
MIN_RSA_BITS = 1024  # RFC 8301 3.2: verifiers must not accept smaller keys
DEFAULT_RSA_BITS = 2048  # RFC 8301 3.2: signers should use at least 2048


class UnusableKey(Exception):
    """A key file that is not a usable DKIM key; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: str  # "rsa" or "ed25519"
    # What dkimpy signs with: a PKCS#1 PEM for RSA, the base64 seed for Ed25519.
    private: bytes
    # The p= value of the TXT record: base64 SubjectPublicKeyInfo for RSA
    # (RFC 6376 3.6.1), the raw 32-byte key for Ed25519 (RFC 8463 4.2).
    public: str

    @property
    def signature_algorithm(self) -> bytes:
        return b"rsa-sha256" if self.algorithm == "rsa" else b"ed25519-sha256"

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record_text(self) -> str:
        return f"v=DKIM1; k={self.algorithm}; p={self.public}"


def generate(algorithm: str, bits: int = DEFAULT_RSA_BITS) -> bytes:
    """A new private key as PKCS#8 PEM."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        if bits < MIN_RSA_BITS:
            raise UnusableKey(f"RSA keys need at least {MIN_RSA_BITS} bits (RFC 8301)")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise UnusableKey(f"unknown algorithm {algorithm!r} (rsa or ed25519)")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, pem: bytes) -> None:
    """Create ``path`` readable by its owner only; never overwrite a key
    (its public half may already be published)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)


def parse(domain: str, selector: str, pem: bytes) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise UnusableKey(f"not an unencrypted PEM private key ({exc})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise UnusableKey(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} needed")
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        algorithm = "rsa"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        private = base64.b64encode(seed)
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        algorithm = "ed25519"
    else:
        raise UnusableKey("not an RSA or Ed25519 key: only those sign DKIM")
    return SigningKey(
        domain=domain.lower().rstrip("."),
        selector=selector.lower(),
        algorithm=algorithm,
        private=private,
        public=base64.b64encode(public).decode("ascii"),
    )


def load(config: Config) -> list[SigningKey]:
    """Every ``[[dkim.keys]]`` entry, read and checked; ConfigError names the
    entry whose file is not a usable key."""
    return [load_entry(config, i, entry) for i, entry in enumerate(config.dkim.keys)]


def load_entry(config: Config, index: int, entry: DkimKey) -> SigningKey:
    where = f"dkim.keys[{index}].key_file"
    try:
        pem = Path(entry.key_file).read_bytes()
    except OSError as exc:
        raise ConfigError(
            config.source, where, f"cannot read {entry.key_file}: {exc.strerror}"
        ) from None
    try:
        return parse(entry.domain, entry.selector, pem)
    except UnusableKey as exc:
        raise ConfigError(config.source, where, f"{entry.key_file}: {exc}") from None
