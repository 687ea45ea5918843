"""PURE SASL server exchanges shared by SMTP (RFC 4954), IMAP (RFC 9051 6.2.2)
and POP3 (RFC 5034).

The protocol cores own the framing (``AUTH PLAIN <ir>``, ``+ <challenge>``
lines); this module owns the mechanisms.  Data crosses this boundary as the
base64 text seen on the wire, so every protocol decodes the same way.  A new
mechanism (SCRAM-SHA-256 later) is one more class with ``start``/``respond``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from mailstack.secret import Secret

# Mechanisms that send the password in the clear: offered only under TLS
# (or where the config explicitly allows plaintext).
PLAINTEXT_MECHANISMS = ("PLAIN", "LOGIN")

# RFC 4616 2: authzid, authcid and passwd are each at most 255 octets; LOGIN
# gets the same bound so both mechanisms accept the same credentials.
MAX_FIELD_OCTETS = 255


class SaslError(Exception):
    """The exchange failed; ``cancelled`` when the client sent ``*``."""

    def __init__(self, reason: str, *, cancelled: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cancelled = cancelled


@dataclass(frozen=True, slots=True)
class Credentials:
    authcid: str  # the identity whose password was given
    password: Secret[str]
    authzid: str = ""  # empty: act as authcid


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``text`` (already base64, may be empty) as a continuation."""

    text: str


SaslResult = Challenge | Credentials


def decode_client_data(text: str) -> bytes:
    """Base64 from the client; ``*`` cancels (RFC 4954 4, RFC 9051 6.2.2)."""
    text = text.strip()
    if text == "*":
        raise SaslError("authentication cancelled", cancelled=True)
    if text == "=":  # RFC 4954 4: "=" is an empty initial response
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("invalid base64 data") from None


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"{what} is not valid UTF-8") from None


class PlainExchange:
    """RFC 4616: message = [authzid] NUL authcid NUL passwd."""

    name = "PLAIN"

    def start(self, initial_response: str | None) -> SaslResult:
        if initial_response is None:
            return Challenge("")
        return self.respond(initial_response)

    def respond(self, line: str) -> SaslResult:
        data = decode_client_data(line)
        parts = data.split(b"\x00")
        if len(parts) != 3:
            raise SaslError("malformed PLAIN message")
        authzid, authcid, password = (_utf8(p, "PLAIN field") for p in parts)
        # RFC 4616 2: authcid and passwd are non-empty, at most 255 octets.
        if not authcid or not password:
            raise SaslError("empty authentication identity or password")
        if any(len(part) > MAX_FIELD_OCTETS for part in parts):
            raise SaslError("PLAIN field too long")
        return Credentials(authcid=authcid, password=Secret(password), authzid=authzid)


class LoginExchange:
    """The LOGIN mechanism (draft-murchison-sasl-login): prompts "Username:" then
    "Password:"; an initial response, when given, is the user name."""

    name = "LOGIN"
    _USERNAME = base64.b64encode(b"Username:").decode()
    _PASSWORD = base64.b64encode(b"Password:").decode()

    def __init__(self) -> None:
        self._username: str | None = None

    def start(self, initial_response: str | None) -> SaslResult:
        if initial_response is None:
            return Challenge(self._USERNAME)
        return self.respond(initial_response)

    def respond(self, line: str) -> SaslResult:
        data = decode_client_data(line)
        if len(data) > MAX_FIELD_OCTETS:
            raise SaslError("LOGIN field too long")
        if self._username is None:
            self._username = _utf8(data, "user name")
            if not self._username:
                raise SaslError("empty user name")
            return Challenge(self._PASSWORD)
        password = _utf8(data, "password")
        if not password:
            raise SaslError("empty password")
        return Credentials(authcid=self._username, password=Secret(password))


SaslExchange = PlainExchange | LoginExchange

_MECHANISMS: dict[str, type[PlainExchange] | type[LoginExchange]] = {
    "PLAIN": PlainExchange,
    "LOGIN": LoginExchange,
}


def mechanisms(*, plaintext_allowed: bool) -> list[str]:
    """Mechanism names to advertise on this connection."""
    return [m for m in _MECHANISMS if plaintext_allowed or m not in PLAINTEXT_MECHANISMS]


def begin(mechanism: str, *, plaintext_allowed: bool) -> SaslExchange:
    """A fresh exchange for ``mechanism`` (case-insensitive); SaslError if not offered."""
    name = mechanism.upper()
    if name not in mechanisms(plaintext_allowed=plaintext_allowed):
        raise SaslError(f"mechanism {mechanism} not available")
    return _MECHANISMS[name]()
