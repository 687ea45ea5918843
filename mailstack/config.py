"""TOML configuration -> typed, validated, frozen settings.

Every section is a frozen dataclass; the loader walks the dataclass fields, so
adding a key is adding a field (plus its line in ``etc/mailstack.toml``).  Any
mistake raises :class:`ConfigError` naming the file, the key and the problem,
which the CLI prints as one line (exit status 2, see ``cli.py``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

T = TypeVar("T")

MIB = 1024 * 1024


class ConfigError(Exception):
    """A configuration mistake; ``str()`` is the one line shown to the user."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A ``host:port`` listen address; IPv6 hosts are written ``[::1]:143``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        if text.startswith("["):
            host, sep, port_text = text[1:].partition("]:")
        else:
            host, sep, port_text = text.rpartition(":")
        if not sep or not host or not port_text.isdigit():
            raise ValueError(f"{text!r} is not host:port")
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} in {text!r} is out of range 0-65535")
        return cls(host, port)


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    # Empty means SQLite in data_dir (resolved by Config.database_url).
    url: str = ""
    # Connections kept open per process (PostgreSQL); the store's thread
    # limiter is sized from pool_size + max_overflow.
    pool_size: int = 5
    max_overflow: int = 5
    # SQLite: how long a writer waits for the file lock before failing.
    busy_timeout_ms: int = 10_000
    # Group commit: how many deliveries one transaction may carry.
    max_batch: int = 64
    # PostgreSQL: other hosts' changes arrive by LISTEN/NOTIFY; the change
    # watcher also polls this often in case a notification was missed.
    safety_poll_seconds: float = 5.0
    # PostgreSQL: how long opening a connection may take before the request
    # fails with a temporary error (libpq connect_timeout, whole seconds).
    connect_timeout_seconds: float = 10.0
    # SQLite: how often each process looks at the database files (a stat, no
    # query) for commits made by other processes (IMAP IDLE, POP3, WebSocket
    # events); local commits are seen at once.
    change_check_seconds: float = 0.01
    # New messages (SMTP delivery, submission) are committed by a child
    # process instead of a thread of the serving process (store/writer_process.py).
    writer_process: bool = False


@dataclass(frozen=True, slots=True)
class TlsConfig:
    # Empty: mailstack generates a self-signed certificate in data_dir/tls
    # (fine for `mailstack dev`, not for a public server).
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # argon2id parameters (RFC 9106 second recommended option is 64 MiB, t=3);
    # hashes made with other parameters are rehashed at the next login.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    # How many hash computations may run at once (each uses memory_kib).
    max_concurrent_hashes: int = 2
    # Failed-login throttling, per client address and per account: the first
    # free_failures failures are answered at once; failure number
    # free_failures + k is answered after delay_base_seconds * 2**(k - 1),
    # capped at delay_max_seconds;
    # after lockout_failures the address/account is refused for lockout_seconds
    # (lockout_failures = 0: never lock out, only delay).
    free_failures: int = 3
    delay_base_seconds: float = 1.0
    delay_max_seconds: float = 30.0
    lockout_failures: int = 20
    lockout_seconds: float = 900.0
    # Failures older than this are forgotten.
    failure_window_seconds: float = 3600.0
    # Client addresses + accounts remembered by the throttle (memory bound);
    # beyond this the least recently failed entries are forgotten first.
    throttle_max_entries: int = 100_000


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    listen: tuple[Endpoint, ...] = ()
    tls_listen: tuple[Endpoint, ...] = ()
    # RFC 1870 SIZE; also the store's per-message limit for this listener.
    max_message_bytes: int = 50 * MIB
    # RFC 5321 4.5.3.1.8: at least 100 recipients must be accepted.
    max_recipients: int = 100
    # Bad commands tolerated before 421 and close.
    max_errors: int = 10
    # Commands per session (bounds a client that loops RSET/NOOP forever).
    max_commands: int = 10_000
    max_connections: int = 1000
    max_connections_per_ip: int = 20
    # RFC 5321 4.5.3.2: 5 minutes for commands, 10 minutes between DATA blocks.
    command_timeout_seconds: float = 300.0
    data_timeout_seconds: float = 600.0
    # Submission only: allow AUTH without TLS when the client is on loopback.
    allow_plaintext_auth_on_loopback: bool = False
    # RFC 5321 6.3: refuse a message with more Received fields (a mail loop).
    max_hops: int = 100
    # MX only (ignored on submission): SPF (RFC 7208), DKIM (RFC 6376) and
    # DMARC (RFC 7489) checks of inbound mail, reported in an
    # Authentication-Results header (RFC 8601) on every delivered message.
    authentication_checks: bool = True
    # The authserv-id naming this server in that header; "" = hostname.
    authserv_id: str = ""
    # SPF "fail" of MAIL FROM: "mark" (deliver, spf=fail in the header) or
    # "reject" (550 5.7.1 at the end of DATA).
    spf_fail: str = "mark"
    # DMARC "fail" where the From domain publishes p=reject: "honour"
    # (550 5.7.1 at the end of DATA, nothing stored) or "mark" (deliver).
    dmarc_reject: str = "honour"
    # All checks of one message end within this; what is unfinished then is
    # a temperror (RFC 7208 4.6.4 asks at least 20 s for SPF).
    authentication_timeout_seconds: float = 20.0
    # Worker threads running checks at once (the libraries block on DNS).
    max_concurrent_checks: int = 8
    # DKIM signatures verified per message (each costs a DNS lookup and a
    # public-key operation); further ones are not reported.
    max_dkim_signatures: int = 5
    # A recipient over quota: "temporary" (452 4.2.2, the client retries) or
    # "permanent" (552 5.2.2, the sender gets a bounce).  RFC 5321 4.2.5 / RFC 3463.
    over_quota: str = "temporary"


@dataclass(frozen=True, slots=True)
class ImapConfig:
    listen: tuple[Endpoint, ...] = ()
    tls_listen: tuple[Endpoint, ...] = ()
    # RFC 9051 / 7888 leave line length to the server; 64 KiB fits any sane
    # UID set.  Literals are bounded separately (APPENDLIMIT, RFC 7889).
    max_line_bytes: int = 65536
    max_literal_bytes: int = 50 * MIB
    max_nesting_depth: int = 16
    max_connections: int = 10_000
    max_connections_per_ip: int = 50
    max_connections_per_account: int = 50
    # RFC 9051 5.4: autologout timer of at least 30 minutes.
    idle_timeout_seconds: float = 1800.0
    # A client that takes none of our output for this long is disconnected
    # (0: never); bounds what a non-reading client holds.
    send_timeout_seconds: float = 60.0
    # Refused commands (BAD, or NO for an oversized literal) per session
    # before BYE and close (0: unlimited).
    max_bad_commands: int = 50
    # Allow LOGIN / AUTHENTICATE PLAIN before STARTTLS (else LOGINDISABLED).
    allow_plaintext_login: bool = False
    # Days the change log keeps expunged UIDs for QRESYNC (RFC 7162); 0: forever.
    expunged_retention_days: int = 30


@dataclass(frozen=True, slots=True)
class Pop3Config:
    listen: tuple[Endpoint, ...] = ()
    tls_listen: tuple[Endpoint, ...] = ()
    # RFC 2449 4: commands up to 255 octets; we allow some slack for AUTH.
    max_line_bytes: int = 1024
    max_commands: int = 10_000
    # Bad commands (unknown, misplaced, over-long) before -ERR and close (0: unlimited).
    max_bad_commands: int = 20
    max_connections: int = 1000
    max_connections_per_ip: int = 20
    # RFC 1939 3: autologout timer of at least 10 minutes.
    idle_timeout_seconds: float = 600.0
    allow_plaintext_login: bool = False
    # The maildrop lock (RFC 1939 8) is a row in the store, renewed every
    # third of this while the session lasts; a host that dies leaves its
    # locks to lapse after this long.
    lock_expiry_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class WebsocketConfig:
    listen: tuple[Endpoint, ...] = ()
    # When both are set the listener serves wss:// with this certificate.
    cert_file: str = ""
    key_file: str = ""
    max_connections: int = 1000
    max_connections_per_ip: int = 200
    # The HTTP upgrade request must arrive (and pass Basic auth) within this.
    handshake_timeout_seconds: float = 10.0
    # Largest JSON request a client may send (the connection closes with 1009).
    max_request_bytes: int = 65536
    # Most summaries one `messages`/`search` answer carries.
    max_page_size: int = 500
    # Longest `wait` a client may ask for, and how many may run per connection.
    max_wait_seconds: float = 600.0
    max_waits_per_connection: int = 16


@dataclass(frozen=True, slots=True)
class CaptureInbox:
    """One isolated capture account and the recipients it catches."""

    account: str = ""
    # Recipient domains ("team-a.example") or whole addresses ("ci@x.example").
    catch: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    # Test mail server mode: smtp and submission accept every recipient at
    # every domain, store each message in a capture account, relay nothing.
    enabled: bool = False
    # Default capture account: mail that matches no [[capture.inboxes]] entry.
    account: str = ""
    inboxes: tuple[CaptureInbox, ...] = ()
    # tempfail+/permfail+/slow+/disconnect+ recipient local parts (README).
    fault_injection: bool = False
    # How long slow+ stalls before answering.
    fault_delay_seconds: float = 60.0
    # Retention per capture account INBOX (0 = no limit); the oldest go first.
    max_messages: int = 10_000
    max_age_seconds: float = 7 * 24 * 3600.0
    retention_interval_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class DnsConfig:
    # Resolvers for every lookup (MX, A/AAAA, TXT for SPF/DKIM/DMARC) as
    # "IP:PORT"; empty means the system's (/etc/resolv.conf).
    nameservers: tuple[Endpoint, ...] = ()
    timeout_seconds: float = 5.0


SMARTHOST_TLS = ("starttls", "implicit")


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    # The queue: submission queues mail for other domains (instead of
    # refusing it) and `mailstack serve` runs the "queue" service that
    # delivers it.  Off by default: a test mail system never relays out.
    enabled: bool = False
    # Port of the remote MX hosts (RFC 5321: 25; tests use an ephemeral port).
    port: int = 25
    # "host:port" of a relay that takes all outgoing mail instead of MX lookups.
    smarthost: str = ""
    smarthost_tls: str = "starttls"  # or "implicit" (RFC 8314); verified either way
    smarthost_username: str = ""
    # File holding the smarthost password (first line), readable by mailstack only.
    smarthost_password_file: str = ""
    # Domains whose MX hosts must offer STARTTLS with a certificate that
    # verifies; elsewhere TLS is opportunistic (RFC 3207) and a certificate
    # that does not verify is logged, not fatal.
    require_tls_domains: tuple[str, ...] = ()
    # Extra CA certificates (PEM) trusted for remote servers; empty: the system's.
    tls_ca_file: str = ""
    # Deliveries (connections) in flight per queue process.
    max_connections: int = 20
    connect_timeout_seconds: float = 30.0
    # RFC 5321 4.5.3.2: at least 5 minutes per command, 10 for the end of DATA.
    command_timeout_seconds: float = 300.0
    data_timeout_seconds: float = 600.0
    # Retries: first after retry_initial_seconds, doubling up to retry_max_seconds.
    retry_initial_seconds: float = 300.0
    retry_max_seconds: float = 14400.0
    # A message still undelivered after this long is returned to its sender.
    max_age_seconds: float = 5 * 86400.0
    # Warn the sender once (a "delayed" DSN) after this long; 0: never.
    delay_warning_seconds: float = 0.0
    # How often a queue process looks for due deliveries (others' new mail).
    poll_seconds: float = 10.0
    # A claimed delivery is reserved this long, renewed while it runs; a
    # process that died releases its deliveries when the lease runs out.
    lease_seconds: float = 120.0
    # RFC 5321 6.3: a message with more Received fields is a loop.
    max_hops: int = 100


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One ``[[dkim.keys]]`` table: a private key signing for ``domain`` under
    ``selector`` (the TXT record at ``selector._domainkey.domain``)."""

    domain: str = ""
    selector: str = ""
    # PEM private key, RSA (rsa-sha256, RFC 6376) or Ed25519 (ed25519-sha256,
    # RFC 8463); the algorithm follows from the key.
    key_file: str = ""


@dataclass(frozen=True, slots=True)
class DkimConfig:
    # Submitted mail whose From domain has keys here is signed with each of
    # them (an RSA and an Ed25519 key side by side is RFC 8463's advice).
    keys: tuple[DkimKey, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    # After SIGTERM (systemctl stop): listeners close at once, open sessions
    # get this long to finish, then are cancelled.  Keep it below the unit's
    # TimeoutStopSec (30 s) so systemd never has to SIGKILL.
    shutdown_grace_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"


SECTIONS: dict[str, type] = {
    "database": DatabaseConfig,
    "tls": TlsConfig,
    "auth": AuthConfig,
    "smtp": SmtpConfig,
    "submission": SmtpConfig,
    "imap": ImapConfig,
    "pop3": Pop3Config,
    "websocket": WebsocketConfig,
    "capture": CaptureConfig,
    "dns": DnsConfig,
    "outbound": OutboundConfig,
    "dkim": DkimConfig,
    "service": ServiceConfig,
    "logging": LoggingConfig,
}


@dataclass(frozen=True, slots=True)
class Config:
    hostname: str = "localhost"
    data_dir: str = "./mailstack-data"
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    submission: SmtpConfig = field(default_factory=SmtpConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    pop3: Pop3Config = field(default_factory=Pop3Config)
    websocket: WebsocketConfig = field(default_factory=WebsocketConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # The file this came from ("" for built-in defaults), for messages.
    source: str = ""

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_path / 'mailstack.db').resolve()}"

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


LOG_LEVELS = ("debug", "info", "warning", "error")
OVER_QUOTA = ("temporary", "permanent")


def _convert(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Check ``value`` from TOML against the field's annotation."""
    origin = get_origin(annotation)
    if annotation is Endpoint:
        if not isinstance(value, str):
            raise ConfigError(source, key, f'expected a "host:port" string, got {value!r}')
        try:
            return Endpoint.parse(value)
        except ValueError as exc:
            raise ConfigError(source, key, str(exc)) from None
    if origin is tuple:
        (item_type, _ellipsis) = get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(source, key, f"expected a list, got {value!r}")
        return tuple(
            _convert(item, item_type, f"{key}[{i}]", source) for i, item in enumerate(value)
        )
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {value!r}")
        if value < 0:
            raise ConfigError(source, key, f"must not be negative, got {value}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, key, f"expected a number, got {value!r}")
        if value < 0:
            raise ConfigError(source, key, f"must not be negative, got {value}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {value!r}")
        return value
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a table [{key}], got {value!r}")
        return _build(annotation, value, key, source)
    raise AssertionError(f"config field {key} has unsupported annotation {annotation!r}")


def _build(cls: type[T], table: dict[str, Any], prefix: str, source: str) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}  # type: ignore[arg-type]
    for key in table:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else key
            raise ConfigError(source, full, "unknown key")
    values: dict[str, Any] = {}
    for name in names:
        if name in table:
            full = f"{prefix}.{name}" if prefix else name
            values[name] = _convert(table[name], hints[name], full, source)
    return cls(**values)


def _validate(config: Config) -> None:
    source = config.source
    if not config.hostname or any(c.isspace() for c in config.hostname):
        raise ConfigError(source, "hostname", f"not a host name: {config.hostname!r}")
    if config.logging.level not in LOG_LEVELS:
        raise ConfigError(source, "logging.level", f"must be one of {', '.join(LOG_LEVELS)}")
    if bool(config.tls.cert_file) != bool(config.tls.key_file):
        raise ConfigError(source, "tls", "cert_file and key_file must be given together")
    for key in ("cert_file", "key_file"):
        path = getattr(config.tls, key)
        if path and not os.access(path, os.R_OK):
            problem = "file not found" if not os.path.exists(path) else "file not readable"
            raise ConfigError(source, f"tls.{key}", f"{problem}: {path}")
    ws = config.websocket
    if bool(ws.cert_file) != bool(ws.key_file):
        raise ConfigError(source, "websocket", "cert_file and key_file must be given together")
    for key in ("cert_file", "key_file"):
        path = getattr(ws, key)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(source, f"websocket.{key}", f"file not readable: {path}")
    for section in ("smtp", "submission"):
        smtp: SmtpConfig = getattr(config, section)
        if smtp.max_recipients < 1:
            raise ConfigError(source, f"{section}.max_recipients", "must be at least 1")
        if smtp.max_message_bytes < 1024:
            raise ConfigError(source, f"{section}.max_message_bytes", "must be at least 1024")
        if smtp.over_quota not in OVER_QUOTA:
            raise ConfigError(
                source, f"{section}.over_quota", f"must be one of {', '.join(OVER_QUOTA)}"
            )
    if config.imap.idle_timeout_seconds and config.imap.idle_timeout_seconds < 1:
        raise ConfigError(source, "imap.idle_timeout_seconds", "must be at least 1")
    if config.database.pool_size < 1:
        raise ConfigError(source, "database.pool_size", "must be at least 1")
    if config.database.max_overflow < 0:
        raise ConfigError(source, "database.max_overflow", "must not be negative")
    if config.database.connect_timeout_seconds < 1:
        raise ConfigError(source, "database.connect_timeout_seconds", "must be at least 1")
    if config.database.safety_poll_seconds <= 0:
        raise ConfigError(source, "database.safety_poll_seconds", "must be positive")
    if config.pop3.lock_expiry_seconds < 3:
        raise ConfigError(source, "pop3.lock_expiry_seconds", "must be at least 3")
    for i, server in enumerate(config.dns.nameservers):
        try:
            ipaddress.ip_address(server.host)
        except ValueError:
            raise ConfigError(
                source, f"dns.nameservers[{i}]", f"{server.host!r} is not an IP address"
            ) from None
    if config.dns.timeout_seconds <= 0:
        raise ConfigError(source, "dns.timeout_seconds", "must be greater than 0")
    if not 0.001 <= config.database.change_check_seconds <= 60:
        raise ConfigError(source, "database.change_check_seconds", "must be 0.001 to 60")
    _validate_auth(config.auth, source)
    _validate_outbound(config.outbound, source)
    _validate_mail_authentication(config, source)
    _validate_websocket(config.websocket, source)
    _validate_capture(config.capture, source)
    if config.capture.enabled and config.outbound.enabled:
        # Capture mode's promise is that nothing ever leaves the host.
        raise ConfigError(
            source, "capture.enabled", "capture mode relays nothing: set outbound.enabled = false"
        )


def _validate_websocket(ws: WebsocketConfig, source: str) -> None:
    for key, least in (
        ("max_page_size", 1),
        ("max_waits_per_connection", 1),
        ("max_request_bytes", 1024),
        ("handshake_timeout_seconds", 1),
    ):
        if getattr(ws, key) < least:
            raise ConfigError(source, f"websocket.{key}", f"must be at least {least}")


def _is_address(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() for c in text)


def _validate_capture(capture: CaptureConfig, source: str) -> None:
    if capture.enabled and not capture.account:
        raise ConfigError(source, "capture.account", "required when capture.enabled is true")
    if capture.account and not _is_address(capture.account):
        raise ConfigError(source, "capture.account", f"not an address: {capture.account!r}")
    if capture.retention_interval_seconds < 1:
        raise ConfigError(source, "capture.retention_interval_seconds", "must be at least 1")
    if capture.fault_injection and not capture.enabled:
        raise ConfigError(source, "capture.fault_injection", "needs capture.enabled = true")
    caught: set[str] = set()
    for index, inbox in enumerate(capture.inboxes):
        key = f"capture.inboxes[{index}]"
        if not _is_address(inbox.account):
            raise ConfigError(source, f"{key}.account", f"not an address: {inbox.account!r}")
        if not inbox.catch:
            raise ConfigError(source, f"{key}.catch", "list at least one domain or address")
        for pattern in inbox.catch:
            text = pattern.lower().lstrip("@")
            if not text or any(c.isspace() for c in text) or text.count("@") > 1:
                raise ConfigError(source, f"{key}.catch", f"not a domain or address: {pattern!r}")
            if text in caught:
                raise ConfigError(source, f"{key}.catch", f"{pattern!r} is caught twice")
            caught.add(text)


def _validate_outbound(outbound: OutboundConfig, source: str) -> None:
    if not 0 < outbound.port <= 65535:
        raise ConfigError(source, "outbound.port", "must be between 1 and 65535")
    if outbound.smarthost:
        try:
            Endpoint.parse(outbound.smarthost)
        except ValueError as exc:
            raise ConfigError(source, "outbound.smarthost", str(exc)) from None
    if outbound.smarthost_tls not in SMARTHOST_TLS:
        raise ConfigError(
            source, "outbound.smarthost_tls", f"must be one of {', '.join(SMARTHOST_TLS)}"
        )
    if bool(outbound.smarthost_username) != bool(outbound.smarthost_password_file):
        raise ConfigError(
            source,
            "outbound",
            "smarthost_username and smarthost_password_file must be given together",
        )
    for key in ("smarthost_password_file", "tls_ca_file"):
        path = getattr(outbound, key)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(source, f"outbound.{key}", f"file not readable: {path}")
    for key in ("max_connections", "max_hops"):
        if getattr(outbound, key) < 1:
            raise ConfigError(source, f"outbound.{key}", "must be at least 1")
    for key in (
        "connect_timeout_seconds",
        "command_timeout_seconds",
        "data_timeout_seconds",
        "retry_initial_seconds",
        "poll_seconds",
        "lease_seconds",
    ):
        if getattr(outbound, key) <= 0:
            raise ConfigError(source, f"outbound.{key}", "must be greater than 0")
    if outbound.retry_max_seconds < outbound.retry_initial_seconds:
        raise ConfigError(
            source, "outbound.retry_max_seconds", "must not be less than retry_initial_seconds"
        )


def _validate_auth(auth: AuthConfig, source: str) -> None:
    # RFC 9106 3.1: t >= 1, 1 <= p <= 2**24 - 1, m >= 8 * p KiB.
    for key in ("argon2_time_cost", "argon2_parallelism", "max_concurrent_hashes"):
        if getattr(auth, key) < 1:
            raise ConfigError(source, f"auth.{key}", "must be at least 1")
    if auth.argon2_parallelism > 2**24 - 1:
        raise ConfigError(source, "auth.argon2_parallelism", "must be at most 16777215")
    if auth.argon2_memory_kib < 8 * auth.argon2_parallelism:
        raise ConfigError(
            source, "auth.argon2_memory_kib", "must be at least 8 * argon2_parallelism"
        )
    if auth.lockout_failures and auth.lockout_failures <= auth.free_failures:
        raise ConfigError(
            source, "auth.lockout_failures", "must be 0 (no lockout) or more than free_failures"
        )
    if auth.throttle_max_entries < 1:
        raise ConfigError(source, "auth.throttle_max_entries", "must be at least 1")


SPF_FAIL_ACTIONS = ("mark", "reject")
DMARC_REJECT_ACTIONS = ("honour", "mark")
# RFC 6376 3.1: a selector is one or more dot-separated sub-domain labels.
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _is_dns_name(name: str) -> bool:
    return bool(name) and all(_DNS_LABEL.fullmatch(label) for label in name.split("."))


def _validate_mail_authentication(config: Config, source: str) -> None:
    smtp = config.smtp
    if smtp.spf_fail not in SPF_FAIL_ACTIONS:
        raise ConfigError(source, "smtp.spf_fail", f"must be one of {', '.join(SPF_FAIL_ACTIONS)}")
    if smtp.dmarc_reject not in DMARC_REJECT_ACTIONS:
        raise ConfigError(
            source, "smtp.dmarc_reject", f"must be one of {', '.join(DMARC_REJECT_ACTIONS)}"
        )
    if any(c.isspace() or c in ';()"' for c in smtp.authserv_id):
        raise ConfigError(source, "smtp.authserv_id", f"not a host name: {smtp.authserv_id!r}")
    if smtp.authentication_timeout_seconds <= 0:
        raise ConfigError(source, "smtp.authentication_timeout_seconds", "must be greater than 0")
    for name in ("max_concurrent_checks", "max_dkim_signatures"):
        if getattr(smtp, name) < 1:
            raise ConfigError(source, f"smtp.{name}", "must be at least 1")
    if config.submission.max_concurrent_checks < 1:
        raise ConfigError(source, "submission.max_concurrent_checks", "must be at least 1")
    seen: set[tuple[str, str]] = set()
    for i, key in enumerate(config.dkim.keys):
        where = f"dkim.keys[{i}]"
        for name in ("domain", "selector", "key_file"):
            if not getattr(key, name):
                raise ConfigError(source, f"{where}.{name}", "required")
        if not _is_dns_name(key.domain):
            raise ConfigError(source, f"{where}.domain", f"not a domain name: {key.domain!r}")
        if not _is_dns_name(key.selector):
            raise ConfigError(source, f"{where}.selector", f"not a selector: {key.selector!r}")
        pair = (key.domain.lower(), key.selector.lower())
        if pair in seen:
            raise ConfigError(
                source, f"{where}.selector", f"{key.selector} of {key.domain} is listed twice"
            )
        seen.add(pair)
        if not os.access(key.key_file, os.R_OK):
            problem = "file not found" if not os.path.exists(key.key_file) else "not readable"
            raise ConfigError(source, f"{where}.key_file", f"{problem}: {key.key_file}")


def check_data_dir(config: Config) -> None:
    """Make sure data_dir exists (creating it) and is writable."""
    path = config.data_path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            config.source, "data_dir", f"cannot create {path}: {exc.strerror}"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(config.source, "data_dir", f"not writable: {path}")


def parse_config(text: str, source: str = "") -> Config:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    config = _build(Config, table, "", source)
    config = dataclasses.replace(config, source=source)
    _validate(config)
    return config


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load ``path`` (or ``$MAILSTACK_CONFIG``); built-in defaults when neither is set."""
    chosen = os.fspath(path) if path is not None else os.environ.get("MAILSTACK_CONFIG", "")
    if not chosen:
        return Config()
    try:
        text = Path(chosen).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(chosen, "", "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(chosen, "", f"cannot read config file: {exc}") from None
    return parse_config(text, chosen)
