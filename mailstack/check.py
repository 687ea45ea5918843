"""``mailstack check``: is this configuration and installation ready to start?

Run it before the first start and after every upgrade (README, "Installing as
systemd units").  The configuration itself was already loaded and validated by the CLI (a mistake
there is one line and exit status 2); this looks at what the configuration
points to:

- each certificate (``[tls]``, ``[websocket]``) parses, matches its key, names
  ``hostname`` and is not expired or expiring within :data:`CERT_MIN_DAYS`;
- ``data_dir`` exists and a file can be created in it;
- the database is reachable and at the latest migration, and in capture
  mode every capture account exists;
- every listen address of the services to run can be bound now.

Nothing is created or changed: a missing SQLite file is reported, not made.
Each problem is one :class:`Problem` line; an empty list means ready.

Run it as the service account (``sudo -u mailstack mailstack check``) so file
permissions are judged as the service sees them.  Ports below the kernel's
unprivileged start (normally 1024) that the account may not bind are not
reported: the unit grants CAP_NET_BIND_SERVICE for them.
"""

from __future__ import annotations

import datetime
import errno
import os
import socket
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from mailstack import service
from mailstack.config import Config, ConfigError, Endpoint
from mailstack.store.records import StoreError
from mailstack.tls import build_context

# A certificate closer to its end than this is a problem: certbot renews at
# 30 days left, so 14 means renewal has been failing for two weeks.
CERT_MIN_DAYS = 14

UNPRIVILEGED_PORT_START_FILE = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
DEFAULT_UNPRIVILEGED_PORT_START = 1024


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing to fix; ``subject`` is the config key or area it concerns."""

    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


# -- certificates ------------------------------------------------------------


def _load_key(key_file: Path) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except TypeError:
        # cryptography raises TypeError for an encrypted key without password.
        raise ValueError("the key is encrypted; mailstack needs it without a passphrase") from None


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in san.get_values_for_type(x509.DNSName)] + [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


def _covers(pattern: str, hostname: str) -> bool:
    """RFC 6125 6.4.3: a wildcard stands for exactly one leftmost label."""
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if pattern == hostname:
        return True
    if pattern.startswith("*."):
        _first, dot, rest = hostname.partition(".")
        return bool(dot) and rest == pattern[2:]
    return False


def certificate_problems(
    subject: str,
    cert_file: Path,
    key_file: Path,
    hostname: str,
    *,
    now: datetime.datetime | None = None,
) -> list[Problem]:
    """Problems with one certificate/key pair; ``subject`` names the section."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        chain = x509.load_pem_x509_certificates(cert_file.read_bytes())
    except OSError as exc:
        return [Problem(f"{subject}.cert_file", f"cannot read {cert_file}: {exc.strerror}")]
    except ValueError:
        return [Problem(f"{subject}.cert_file", f"{cert_file} holds no PEM certificate")]
    try:
        key = _load_key(key_file)
    except OSError as exc:
        return [Problem(f"{subject}.key_file", f"cannot read {key_file}: {exc.strerror}")]
    except ValueError as exc:
        return [Problem(f"{subject}.key_file", f"{key_file}: {exc}")]
    leaf = chain[0]
    problems = []
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        problems.append(
            Problem(subject, f"the key in {key_file} does not match the certificate {cert_file}")
        )
    expires = leaf.not_valid_after_utc
    when = expires.strftime("%Y-%m-%d %H:%M UTC")
    if expires <= now:
        problems.append(Problem(f"{subject}.cert_file", f"{cert_file} expired on {when}"))
    elif expires - now < datetime.timedelta(days=CERT_MIN_DAYS):
        days = (expires - now).days
        problems.append(
            Problem(
                f"{subject}.cert_file",
                f"{cert_file} expires on {when}, in {days} days (less than {CERT_MIN_DAYS}):"
                " renew it, then `systemctl reload` the services",
            )
        )
    if leaf.not_valid_before_utc > now:
        start = leaf.not_valid_before_utc.strftime("%Y-%m-%d %H:%M UTC")
        problems.append(Problem(f"{subject}.cert_file", f"{cert_file} is not valid before {start}"))
    names = _names(leaf)
    if not any(_covers(name, hostname) for name in names):
        # RFC 6125 6.4.4: clients match subjectAltName, not the subject CN.
        shown = ", ".join(names) or "no subjectAltName"
        problems.append(
            Problem(f"{subject}.cert_file", f"{cert_file} does not name {hostname} ({shown})")
        )
    if not problems:
        # What the listeners will do with the pair; catches what OpenSSL
        # refuses for reasons of its own (e.g. a too weak key).
        try:
            build_context(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            problems.append(Problem(subject, f"TLS refuses {cert_file} / {key_file}: {exc}"))
    return problems


def tls_problems(config: Config, *, now: datetime.datetime | None = None) -> list[Problem]:
    """Both configured certificates.  Without ``[tls]`` files mailstack uses a
    generated self-signed one: nothing to check, though clients will warn."""
    problems = []
    for section in ("tls", "websocket"):
        settings = getattr(config, section)
        if settings.cert_file:
            problems += certificate_problems(
                section, Path(settings.cert_file), Path(settings.key_file), config.hostname, now=now
            )
    return problems


# -- data_dir and database ---------------------------------------------------


def data_dir_problems(config: Config) -> list[Problem]:
    path = config.data_path
    if not path.exists():
        return [
            Problem(
                "data_dir",
                f"{path} does not exist (systemd's StateDirectory= or `mailstack db upgrade`"
                " creates it)",
            )
        ]
    if not path.is_dir():
        return [Problem("data_dir", f"{path} is not a directory")]
    # Really create a file: os.access() does not see every reason a write fails.
    try:
        fd, name = tempfile.mkstemp(prefix=".mailstack-check-", dir=path)
    except OSError as exc:
        return [Problem("data_dir", f"cannot create files in {path}: {exc.strerror}")]
    os.close(fd)
    os.unlink(name)
    return []


def _missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file ``url`` names when it does not exist (opening it would
    create an empty one)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").partition("?")[0]
    if not path or path == ":memory:" or Path(path).exists():
        return None
    return Path(path)


async def _missing_capture_accounts(config: Config) -> list[str]:
    """Opens the store (raising its StoreError) and names the capture
    accounts that do not exist (the SMTP services would refuse to start)."""
    from mailstack.capture.routing import CaptureRouter
    from mailstack.store.store import Store

    store = await Store.open(config)
    try:
        if not config.capture.enabled:
            return []
        accounts = CaptureRouter(config.capture).accounts
        return [address for address in accounts if await store.get_account(address) is None]
    finally:
        await store.aclose()


def database_problems(config: Config) -> list[Problem]:
    """Reachable and at the latest migration: what ``Store.open`` insists on."""
    missing = _missing_sqlite_file(config.database_url)
    if missing is not None:
        return [
            Problem(
                "database",
                f"not initialised ({missing} does not exist): run `mailstack db upgrade`",
            )
        ]
    try:
        missing_accounts = trio.run(_missing_capture_accounts, config)
    except StoreError as exc:
        return [Problem("database", str(exc))]
    return [
        Problem(
            "capture",
            f"capture account {address} does not exist: `mailstack user add {address}`",
        )
        for address in missing_accounts
    ]


# -- services and ports ------------------------------------------------------


def _unprivileged_port_start() -> int:
    try:
        return int(UNPRIVILEGED_PORT_START_FILE.read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_UNPRIVILEGED_PORT_START


def bind_problem(endpoint: Endpoint) -> str | None:
    """Why ``endpoint`` cannot be bound now, or None.

    Binds the way trio's listeners do (SO_REUSEADDR, IPv6 sockets v6-only),
    so a port held by a listening socket fails here as it would at start.
    """
    try:
        infos = socket.getaddrinfo(
            endpoint.host, endpoint.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"cannot resolve {endpoint.host}: {exc.strerror}"
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EACCES and endpoint.port < _unprivileged_port_start():
                    continue  # the unit's CAP_NET_BIND_SERVICE allows it
                if exc.errno == errno.EADDRINUSE:
                    return "address already in use (is mailstack or another server running?)"
                return exc.strerror or str(exc)
    return None


def _services_to_check(config: Config, names: Sequence[str]) -> tuple[list[str], list[Problem]]:
    """The named services (each must exist and be configured: a ConfigError
    otherwise, as for ``serve``), or every configured one."""
    if names:
        return [name for name, _serve in service.select_services(config, names)], []
    chosen, problems = [], []
    for name in service.SERVICES:
        if not service.is_configured(config, name):
            continue
        try:
            service.load_service(name)
        except service.ServiceUnavailable as exc:
            problems.append(Problem(name, f"configured but {exc.problem}"))
            continue
        chosen.append(name)
    if not chosen and not problems:
        problems.append(Problem("config", "no service configured (set listen in [smtp], ...)"))
    return chosen, problems


def port_problems(config: Config, services: Sequence[str]) -> list[Problem]:
    problems = []
    seen: dict[Endpoint, str] = {}
    for name in services:
        section = getattr(config, name, None)  # the queue has no listeners
        for key in ("listen", "tls_listen"):
            for endpoint in getattr(section, key, ()):
                subject = f"{name}.{key}"
                if endpoint.port == 0:
                    continue  # any free port: nothing can collide
                if endpoint in seen:
                    problems.append(Problem(subject, f"{endpoint} is also in {seen[endpoint]}"))
                    continue
                seen[endpoint] = subject
                reason = bind_problem(endpoint)
                if reason is not None:
                    problems.append(Problem(subject, f"cannot listen on {endpoint}: {reason}"))
    return problems


def run_checks(config: Config, names: Sequence[str] = ()) -> list[Problem]:
    """Every check; raises ConfigError only for a named service that cannot run."""
    services, problems = _services_to_check(config, names)
    problems += tls_problems(config)
    data_dir = data_dir_problems(config)
    problems += data_dir
    if not data_dir or config.database.url:
        # SQLite lives in data_dir: its problem already says what to fix.
        problems += database_problems(config)
    problems += port_problems(config, services)
    problems += dkim_problems(config)
    return problems


def dkim_problems(config: Config) -> list[Problem]:
    """Every [[dkim.keys]] file that submission could not sign with."""
    from mailstack.smtp.dkim_keys import load_entry

    problems = []
    for index, entry in enumerate(config.dkim.keys):
        try:
            load_entry(config, index, entry)
        except ConfigError as exc:
            problems.append(Problem(exc.key, exc.problem))
    return problems
