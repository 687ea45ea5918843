"""PURE session rules: states, which command is legal where, capabilities,
and mailbox-name encoding (RFC 9051 3, 6, 5.1; RFC 3501 5.1.3)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from mailstack.imap import commands as c
from mailstack.imap import mutf7


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_ANY = frozenset(State) - {State.LOGOUT}
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})
_NONAUTH = frozenset({State.NOT_AUTHENTICATED})

# RFC 9051 6.1-6.4: the states each command is valid in.
ALLOWED_STATES: dict[type, frozenset[State]] = {
    c.Capability: _ANY,
    c.Noop: _ANY,
    c.Logout: _ANY,
    c.Id: _ANY,
    c.StartTls: _NONAUTH,
    c.Authenticate: _NONAUTH,
    c.Login: _NONAUTH,
    c.Enable: _AUTH,
    c.Select: _AUTH,
    c.Create: _AUTH,
    c.Delete: _AUTH,
    c.Rename: _AUTH,
    c.Subscribe: _AUTH,
    c.ListCmd: _AUTH,
    c.Namespace: _AUTH,
    c.Status: _AUTH,
    c.Append: _AUTH,
    c.Idle: _AUTH,
    c.Check: _SELECTED,
    c.Close: _SELECTED,
    c.Unselect: _SELECTED,
    c.Expunge: _SELECTED,
    c.Search: _SELECTED,
    c.Fetch: _SELECTED,
    c.Store: _SELECTED,
    c.Copy: _SELECTED,
    c.Sort: _SELECTED,
    c.Thread: _SELECTED,
    c.GetQuota: _AUTH,
    c.GetQuotaRoot: _AUTH,
    c.SetQuota: _AUTH,
    c.Compress: _AUTH,
}

# RFC 9051 7.4.1: after these (by sequence number) no EXPUNGE may be sent;
# their UID forms are fine.
NO_EXPUNGE_AFTER = (c.Fetch, c.Store, c.Search, c.Sort, c.Thread)

ENABLEABLE = ("IMAP4REV2", "UTF8=ACCEPT", "CONDSTORE", "QRESYNC")

# Announced once authenticated: SORT/THREAD (RFC 5256, 5957, 5267),
# COMPRESS (RFC 4978), QUOTA (RFC 9208), BINARY (RFC 3516), MULTIAPPEND (RFC 3502).
EXTENSIONS = (
    "SORT",
    "SORT=DISPLAY",
    "ESORT",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "COMPRESS=DEFLATE",
    "QUOTA",
    "QUOTA=RES-STORAGE",
    "QUOTA=RES-MESSAGE",
    "BINARY",
    "MULTIAPPEND",
)


@dataclass
class Settings:
    max_literal_bytes: int
    allow_plaintext_login: bool
    tls_available: bool


@dataclass
class SessionState:
    """What the rules below depend on."""

    settings: Settings
    tls_active: bool
    state: State = State.NOT_AUTHENTICATED
    enabled: set[str] = field(default_factory=set)

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def utf8(self) -> bool:
        """Mailbox names and quoted strings in UTF-8 (RFC 9051 / RFC 6855)."""
        return self.rev2 or "UTF8=ACCEPT" in self.enabled

    @property
    def login_allowed(self) -> bool:
        return self.tls_active or self.settings.allow_plaintext_login

    def check_state(self, command: c.Command) -> str | None:
        """An error text when ``command`` is not valid now (tagged BAD), else None."""
        allowed = ALLOWED_STATES[type(command)]
        if self.state in allowed:
            return None
        if State.SELECTED in allowed and self.state == State.AUTHENTICATED:
            return "No mailbox selected"
        if self.state == State.NOT_AUTHENTICATED:
            return "Log in first"
        return "Command not valid in this state"

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"]
        if self.state == State.NOT_AUTHENTICATED:
            if self.settings.tls_available and not self.tls_active:
                caps.append("STARTTLS")
            if self.login_allowed:
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")
            return caps
        return [
            *caps,
            "NAMESPACE",
            "UNSELECT",
            "UIDPLUS",
            "MOVE",
            "CHILDREN",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "SPECIAL-USE",
            "CREATE-SPECIAL-USE",
            "ESEARCH",
            "CONDSTORE",
            "QRESYNC",
            "SEARCHRES",
            "STATUS=SIZE",
            f"APPENDLIMIT={self.settings.max_literal_bytes}",
            "UTF8=ACCEPT",
            *EXTENSIONS,
        ]

    # -- mailbox names (RFC 9051 5.1, RFC 3501 5.1.3) ------------------------
    def decode_name(self, wire: str) -> str:
        """Stored (UTF-8) name of a name the client sent; raises mutf7.Mutf7Error."""
        name = wire if self.utf8 else mutf7.decode(wire)
        return "INBOX" if name.upper() == "INBOX" else name

    def encode_name(self, name: str) -> str:
        return name if self.utf8 else mutf7.encode(name)


def valid_mailbox_name(name: str) -> bool:
    """No empty levels, no wildcards or control characters (RFC 9051 5.1)."""
    if not name or name.startswith("/") or name.endswith("/") or "//" in name:
        return False
    return not any(ch in "%*" or ord(ch) < 32 or ord(ch) == 127 for ch in name)


def list_matches(pattern: str, name: str) -> bool:
    """RFC 9051 6.3.9: "*" matches anything, "%" anything but the delimiter "/";
    the INBOX prefix of a pattern is case-insensitive."""
    if pattern[:5].upper() == "INBOX" and (name == "INBOX" or name.startswith("INBOX/")):
        pattern = "INBOX" + pattern[5:]
    regex = "".join(
        ".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch)
        for ch in re.sub(r"\*+", "*", pattern)
    )
    return re.fullmatch(regex, name, re.DOTALL) is not None
