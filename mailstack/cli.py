"""The ``mailstack`` command line (DESIGN.md "Commands").

Every failure ends as exactly one line ``mailstack: <message>`` on stderr:
exit status 2 for a configuration mistake (so a systemd unit with
``RestartPreventExitStatus=2`` does not restart-loop on a bad config file),
1 for any other error, 130 after Ctrl-C.  The services and the migrations
are imported only by the commands that run them.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import string
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import trio

from mailstack import __version__
from mailstack.auth.passwords import PasswordHasher
from mailstack.auth.sasl import MAX_FIELD_OCTETS
from mailstack.config import (
    CaptureConfig,
    Config,
    ConfigError,
    Endpoint,
    ImapConfig,
    Pop3Config,
    SmtpConfig,
    WebsocketConfig,
    check_data_dir,
    load_config,
)
from mailstack.logs import setup_logging
from mailstack.store.records import StoreError

if TYPE_CHECKING:
    from mailstack.store.store import Store

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class CliError(Exception):
    """A usage or data error; ``str()`` is the line shown to the user."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 1."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see `{self.prog} --help`)")


# -- helpers -------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "error"


def _check_database_exists(config: Config) -> None:
    """A missing SQLite file means `db upgrade` never ran: say so, instead of
    letting SQLite create an empty file (or fail on a missing data_dir)."""
    url = config.database_url
    if not url.startswith("sqlite:///"):
        return
    path = url.removeprefix("sqlite:///").partition("?")[0]
    if path and path != ":memory:" and not Path(path).exists():
        raise CliError(
            f"database is not initialised ({path} does not exist); run `mailstack db upgrade`"
        )


async def _with_store(config: Config, fn: Callable[[Store], Awaitable[T]]) -> T:
    from mailstack.store.store import Store

    store = await Store.open(config)
    try:
        return await fn(store)
    finally:
        await store.aclose()


def _run_store(config: Config, fn: Callable[[Store], Awaitable[T]]) -> T:
    _check_database_exists(config)
    return trio.run(_with_store, config, fn)


def read_password(prompt: str = "Password: ", *, confirm: bool = False) -> str:
    """One line from stdin when it is not a terminal (scripts, pipes), else
    prompted (twice with ``confirm``); an empty password is refused."""
    if sys.stdin is None:
        raise CliError("no password given: stdin is closed")
    if sys.stdin.isatty():
        password = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat password: ") != password:
            raise CliError("passwords do not match")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise CliError("empty password refused")
    return password


def _read_new_password() -> str:
    """A new account password: prompted twice on a terminal."""
    password = read_password(confirm=True)
    # SASL PLAIN (RFC 4616 2) carries at most 255 octets: a longer password
    # could never be used to log in.
    if len(password.encode("utf-8")) > MAX_FIELD_OCTETS:
        raise CliError(f"password longer than {MAX_FIELD_OCTETS} bytes refused")
    return password


def _hash_password(config: Config) -> str:
    return PasswordHasher(config.auth).hash(_read_new_password())


# -- db ------------------------------------------------------------------


def cmd_db_upgrade(config: Config, args: argparse.Namespace) -> None:
    check_data_dir(config)
    from mailstack.store import migrate

    migrate.upgrade(config.database_url)
    print("database schema is up to date")


# -- domain ----------------------------------------------------------------


def cmd_domain_add(config: Config, args: argparse.Namespace) -> None:
    record = _run_store(config, lambda store: store.add_domain(args.domain))
    print(f"added domain {record.name}")


def cmd_domain_list(config: Config, args: argparse.Namespace) -> None:
    for domain in _run_store(config, lambda store: store.list_domains()):
        print(domain.name)


def cmd_domain_del(config: Config, args: argparse.Namespace) -> None:
    _run_store(config, lambda store: store.delete_domain(args.domain))
    print(f"deleted domain {args.domain}")


# -- user ------------------------------------------------------------------


def _quota_text(quota_bytes: int | None, quota_messages: int | None) -> str:
    size = "no size limit" if quota_bytes is None else f"{quota_bytes} bytes"
    count = "no message limit" if quota_messages is None else f"{quota_messages} messages"
    return f"{size}, {count}"


def cmd_user_add(config: Config, args: argparse.Namespace) -> None:
    async def check(store: Store) -> None:
        # Check first so nobody types a password for an address that cannot exist.
        local, at, domain = args.address.rpartition("@")
        if not (local and at and domain):
            raise CliError(f"not a mail address: {args.address!r} (expected user@domain)")
        if not await store.is_local_domain(domain):
            raise CliError(
                f"{domain} is not a local domain; add it first with `mailstack domain add {domain}`"
            )
        if await store.get_account(args.address) is not None:
            raise CliError(f"account {args.address} already exists")

    _run_store(config, check)
    # Read and hash outside trio.run: a blocked read in a worker thread could
    # not be interrupted by Ctrl-C.
    password_hash = _hash_password(config)
    record = _run_store(config, lambda store: store.add_account(args.address, password_hash))
    print(f"added user {record.address}")


def cmd_user_passwd(config: Config, args: argparse.Namespace) -> None:
    async def check(store: Store) -> None:
        if await store.get_account(args.address) is None:
            raise CliError(f"no such account: {args.address}")

    _run_store(config, check)
    password_hash = _hash_password(config)
    _run_store(config, lambda store: store.set_password_hash(args.address, password_hash))
    print(f"changed password of {args.address}")


def cmd_user_del(config: Config, args: argparse.Namespace) -> None:
    _run_store(config, lambda store: store.delete_account(args.address))
    print(f"deleted user {args.address} and all its mail")


def cmd_user_list(config: Config, args: argparse.Namespace) -> None:
    for account in _run_store(config, lambda store: store.list_accounts()):
        if account.quota_bytes is None and account.quota_messages is None:
            print(account.address)
        else:
            quota = _quota_text(account.quota_bytes, account.quota_messages)
            print(f"{account.address}\tquota: {quota}")


def cmd_user_quota(config: Config, args: argparse.Namespace) -> None:
    if args.none and (args.bytes is not None or args.messages is not None):
        raise CliError("--none cannot be combined with --bytes or --messages")
    if not args.none and args.bytes is None and args.messages is None:
        raise CliError("give --bytes N, --messages N or --none")

    async def quota(store: Store) -> tuple[int | None, int | None]:
        account = await store.get_account(args.address)
        if account is None:
            raise CliError(f"no such account: {args.address}")
        if args.none:
            new_bytes, new_messages = None, None
        else:
            # A limit not named on the command line stays as it was.
            new_bytes = account.quota_bytes if args.bytes is None else args.bytes
            new_messages = account.quota_messages if args.messages is None else args.messages
        await store.set_quota(args.address, new_bytes, new_messages)
        return new_bytes, new_messages

    new_bytes, new_messages = _run_store(config, quota)
    print(f"quota of {args.address}: {_quota_text(new_bytes, new_messages)}")


# -- alias -------------------------------------------------------------------


def cmd_alias_add(config: Config, args: argparse.Namespace) -> None:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets:
        raise CliError("an alias needs at least one target address")
    record = _run_store(config, lambda store: store.add_alias(args.alias, targets))
    print(f"added alias {record.alias} -> {', '.join(record.targets)}")


def cmd_alias_list(config: Config, args: argparse.Namespace) -> None:
    for alias in _run_store(config, lambda store: store.list_aliases()):
        print(f"{alias.alias} -> {', '.join(alias.targets)}")


def cmd_alias_del(config: Config, args: argparse.Namespace) -> None:
    _run_store(config, lambda store: store.delete_alias(args.alias))
    print(f"deleted alias {args.alias}")


# -- queue (outbound delivery) -----------------------------------------------------


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_queue_list(config: Config, args: argparse.Namespace) -> None:
    messages = _run_store(config, lambda store: store.list_queue())
    if not messages:
        print("the queue is empty")
        return
    now = datetime.now(UTC)
    waiting = 0
    for message in messages:
        sender = f"<{message.sender}>"
        print(
            f"{message.id}  queued {_when(message.created_at)}  {message.size} bytes  from {sender}"
        )
        for r in message.recipients:
            if r.state.value != "queued":
                print(f"    <{r.address}>  {r.state.value}: {r.last_result}")
                continue
            waiting += 1
            if r.leased_until is not None and r.leased_until > now:
                status = "being delivered"
            elif r.next_attempt_at <= now:
                status = "due now"
            else:
                status = f"next attempt {_when(r.next_attempt_at)}"
            last = f", last: {r.last_result}" if r.last_result else ""
            print(f"    <{r.address}>  {status}, {_count(r.attempts, 'attempt')}{last}")
    print(f"{_count(len(messages), 'message')}, {_count(waiting, 'recipient')} waiting")


def cmd_queue_retry(config: Config, args: argparse.Namespace) -> None:
    count = _run_store(config, lambda store: store.retry_queue(args.id))
    which = f"message {args.id}" if args.id is not None else "the queue"
    print(f"{which}: {_count(count, 'recipient')} due now (a running queue service picks them up)")


def cmd_queue_delete(config: Config, args: argparse.Namespace) -> None:
    waiting = _run_store(config, lambda store: store.delete_queued(args.id))
    print(f"deleted message {args.id} from the queue ({_count(waiting, 'recipient')} waiting)")


def _add_queue_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    queue = commands.add_parser("queue", help="the outbound queue").add_subparsers(
        dest="queue_command", required=True, metavar="COMMAND"
    )
    queue.add_parser("list", help="queued messages and their recipients").set_defaults(
        func=cmd_queue_list
    )
    p = queue.add_parser("retry", help="try waiting recipients now (of ID, or all)")
    p.add_argument("id", nargs="?", type=_non_negative, metavar="ID")
    p.set_defaults(func=cmd_queue_retry)
    p = queue.add_parser("delete", help="drop a queued message without notifying anyone")
    p.add_argument("id", type=_non_negative, metavar="ID")
    p.set_defaults(func=cmd_queue_delete)


# -- serve / dev ---------------------------------------------------------------


def _serve(config: Config, names: Sequence[str], *, ready_text: str = "") -> None:
    from mailstack import service

    check_data_dir(config)
    _check_database_exists(config)
    service.main_serve(config, names, ready_text=ready_text)


def cmd_serve(config: Config, args: argparse.Namespace) -> None:
    _serve(config, args.services)


def cmd_check(config: Config, args: argparse.Namespace) -> None:
    from mailstack import check

    problems = check.run_checks(config, args.services)
    for problem in problems:
        print(problem)
    if problems:
        raise CliError(f"{len(problems)} problem(s) found")
    print(f"ok: ready to serve ({config.source or 'built-in defaults'})")


def cmd_watch(config: Config, args: argparse.Namespace) -> None:
    import ssl

    from mailstack.websocket import client

    url = args.url or client.default_url(config)
    password = read_password(f"Password for {args.address}: ")
    context = None
    if url.startswith("wss:"):
        context = ssl.create_default_context(cafile=args.cafile)

    def show(line: str) -> None:
        print(line, flush=True)

    try:
        trio.run(
            partial(
                client.watch,
                url,
                args.address,
                password,
                ssl_context=context,
                show=show,
                raw_json=args.json,
            )
        )
    except client.WatchError as exc:
        raise CliError(str(exc)) from None


# `mailstack dev`: unprivileged ports on loopback (DESIGN.md "Install and run").
DEV_HOST = "127.0.0.1"
DEV_PORTS = {
    "smtp": (2525, None),
    "submission": (2587, 2465),
    "imap": (2143, 2993),
    "pop3": (2110, 2995),
}
DEV_WEBSOCKET_PORT = 8025
DEV_FAULT_DELAY_SECONDS = 30.0
DEMO_USER = "demo"
DEMO_PASSWORD_FILE = "demo-password"


def dev_config(data_dir: Path, *, capture_account: str = "") -> Config:
    """The zero-config demo: defaults plus loopback listeners where plaintext
    login is allowed (on 127.0.0.1 nothing crosses a network).
    ``capture_account``: run as a test mail server (``dev --capture``) that
    catches everything in that account, with fault injection on."""

    def endpoints(port: int | None) -> tuple[Endpoint, ...]:
        return () if port is None else (Endpoint(DEV_HOST, port),)

    def smtp(name: str) -> SmtpConfig:
        plain, tls = DEV_PORTS[name]
        return SmtpConfig(
            listen=endpoints(plain),
            tls_listen=endpoints(tls),
            allow_plaintext_auth_on_loopback=True,
            # Local test mail: no SPF/DKIM/DMARC lookups (nor their DNS waits).
            authentication_checks=False,
        )

    imap_plain, imap_tls = DEV_PORTS["imap"]
    pop3_plain, pop3_tls = DEV_PORTS["pop3"]
    return Config(
        hostname="localhost",
        data_dir=str(data_dir),
        smtp=smtp("smtp"),
        submission=smtp("submission"),
        imap=ImapConfig(
            listen=endpoints(imap_plain), tls_listen=endpoints(imap_tls), allow_plaintext_login=True
        ),
        pop3=Pop3Config(
            listen=endpoints(pop3_plain), tls_listen=endpoints(pop3_tls), allow_plaintext_login=True
        ),
        websocket=WebsocketConfig(listen=endpoints(DEV_WEBSOCKET_PORT)),
        capture=CaptureConfig(
            enabled=bool(capture_account),
            account=capture_account,
            fault_injection=bool(capture_account),
            fault_delay_seconds=DEV_FAULT_DELAY_SECONDS,
        ),
        source="mailstack dev",
    )


DEMO_PASSWORD_ALPHABET = string.ascii_letters + string.digits


def _demo_password(data_dir: Path) -> str:
    """The demo password, kept in data_dir so every run prints the same one."""
    path = data_dir / DEMO_PASSWORD_FILE
    if path.exists():
        password = path.read_text(encoding="utf-8").strip()
        if password:
            return password
    # Letters and digits only (about 95 bits): a password that began with
    # "-" (token_urlsafe's alphabet has it) reads as an option to swaks and
    # curl in the README's commands.
    password = "".join(secrets.choice(DEMO_PASSWORD_ALPHABET) for _ in range(16))
    path.touch(mode=0o600)
    path.write_text(password + "\n", encoding="utf-8")
    return password


def _ensure_demo_account(config: Config, domain: str, password: str) -> str:
    from mailstack.store import migrate

    migrate.upgrade(config.database_url)
    hasher = PasswordHasher(config.auth)
    address = f"{DEMO_USER}@{domain}"

    async def ensure(store: Store) -> None:
        if not await store.is_local_domain(domain):
            await store.add_domain(domain)
        account = await store.get_account(address)
        if account is None:
            password_hash = await trio.to_thread.run_sync(hasher.hash, password)
            await store.add_account(address, password_hash)
        elif not await trio.to_thread.run_sync(hasher.verify, account.password_hash, password):
            # The password file was replaced: make the account match what we print.
            password_hash = await trio.to_thread.run_sync(hasher.hash, password)
            await store.set_password_hash(address, password_hash)

    _run_store(config, ensure)
    return address


def _dev_banner(config: Config, address: str, password: str, cert_file: Path) -> str:
    def ports(name: str) -> str:
        plain, tls = DEV_PORTS[name]
        text = f"{plain} (plain/STARTTLS)"
        return text if tls is None else f"{text}, {tls} (TLS)"

    return "\n".join(
        [
            "mailstack dev is running; connection settings:",
            f"  host        {DEV_HOST}",
            f"  SMTP (MX)   {ports('smtp')}   no login, accepts mail for {address.split('@')[1]}",
            f"  submission  {ports('submission')}",
            f"  IMAP        {ports('imap')}",
            f"  POP3        {ports('pop3')}",
            f"  WebSocket   ws://{DEV_HOST}:{DEV_WEBSOCKET_PORT}/",
            f"  user        {address}",
            f"  password    {password}",
            f"  data        {config.data_path.resolve()}",
            f"  certificate {cert_file.resolve()}",
            "              self-signed for localhost and 127.0.0.1: import it as trusted in",
            "              your mail client, or test with `openssl s_client -connect",
            f"              {DEV_HOST}:{DEV_PORTS['imap'][1]} -CAfile {cert_file.resolve()}`",
            "  plaintext login is allowed on these loopback ports; press Ctrl-C to stop.",
            *_capture_banner(config),
        ]
    )


def _capture_banner(config: Config) -> list[str]:
    if not config.capture.enabled:
        return []
    return [
        "capture mode: SMTP and submission accept mail for any address at any domain",
        f"  (no login needed) and store it in {config.capture.account}; nothing is relayed.",
        "  Fault injection: tempfail+x@, permfail+x@, slow+x@, disconnect+x@ (at RCPT),",
        "  tempfail-data+x@ etc. (at the end of DATA); "
        f"slow+ stalls {DEV_FAULT_DELAY_SECONDS:.0f} s.",
    ]


def cmd_dev(config: Config, args: argparse.Namespace) -> None:
    from mailstack.tls import ensure_dev_certificate

    capture_account = f"{DEMO_USER}@{args.domain}" if args.capture else ""
    config = dev_config(Path(args.data_dir), capture_account=capture_account)
    setup_logging(config.logging)
    check_data_dir(config)
    password = _demo_password(config.data_path)
    address = _ensure_demo_account(config, args.domain, password)
    cert_file, _key_file = ensure_dev_certificate(config.data_path / "tls", config.hostname)
    _serve(config, (), ready_text=_dev_banner(config, address, password, cert_file))


# -- parser --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mailstack",
        description="A complete small mail server: SMTP, submission, IMAP, POP3.",
    )
    parser.add_argument("--version", action="version", version=f"mailstack {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file (default: $MAILSTACK_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of unexpected errors",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    db.add_parser("upgrade", help="create or migrate the schema (safe to run again)").set_defaults(
        func=cmd_db_upgrade
    )

    domain = commands.add_parser("domain", help="local domains").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = domain.add_parser("add", help="add a local domain")
    p.add_argument("domain", metavar="DOMAIN")
    p.set_defaults(func=cmd_domain_add)
    domain.add_parser("list", help="list local domains").set_defaults(func=cmd_domain_list)
    p = domain.add_parser("del", help="delete a local domain")
    p.add_argument("domain", metavar="DOMAIN")
    p.set_defaults(func=cmd_domain_del)

    user = commands.add_parser("user", help="mail accounts").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    password_note = "the password is read from stdin when it is not a terminal, else prompted twice"
    p = user.add_parser(
        "add", help="add an account", description=f"Add an account; {password_note}."
    )
    p.add_argument("address", metavar="ADDRESS", help="user@domain (the domain must exist)")
    p.set_defaults(func=cmd_user_add)
    p = user.add_parser(
        "passwd",
        help="set an account's password",
        description=f"Set the password; {password_note}.",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.set_defaults(func=cmd_user_passwd)
    p = user.add_parser("del", help="delete an account and all its mail")
    p.add_argument("address", metavar="ADDRESS")
    p.set_defaults(func=cmd_user_del)
    user.add_parser("list", help="list accounts").set_defaults(func=cmd_user_list)
    p = user.add_parser(
        "quota",
        help="set an account's quota",
        description="Set the size and/or message-count limit; a limit not given is kept.",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--bytes", type=_non_negative, metavar="N", help="total size limit in bytes")
    p.add_argument("--messages", type=_non_negative, metavar="N", help="message count limit")
    p.add_argument("--none", action="store_true", help="remove both limits")
    p.set_defaults(func=cmd_user_quota)

    alias = commands.add_parser("alias", help="address aliases").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = alias.add_parser(
        "add", help="add an alias", description="Add an alias; '@domain' as ALIAS is a catch-all."
    )
    p.add_argument("alias", metavar="ALIAS", help="alias@domain, or @domain for a catch-all")
    p.add_argument("targets", metavar="TARGET[,TARGET...]", help="comma-separated addresses")
    p.set_defaults(func=cmd_alias_add)
    alias.add_parser("list", help="list aliases").set_defaults(func=cmd_alias_list)
    p = alias.add_parser("del", help="delete an alias")
    p.add_argument("alias", metavar="ALIAS")
    p.set_defaults(func=cmd_alias_del)

    p = commands.add_parser(
        "serve",
        help="run services",
        description="Run the named services in one process, or every configured one.",
    )
    p.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help="smtp, submission, imap, pop3, websocket, queue (default: all configured)",
    )
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser(
        "check",
        help="check the configuration and installation before starting",
        description=(
            "Check certificates (readable, matching key, not expiring within 14 days), "
            "data_dir, the database (reachable, migrated) and that the listen ports are "
            "free. Prints one line per problem; exit status 0 when ready, 1 with problems, "
            "2 for a configuration error."
        ),
    )
    p.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help="whose ports to check (default: all configured)",
    )
    p.set_defaults(func=cmd_check)

    p = commands.add_parser(
        "watch",
        help="print each new message of an account as it arrives (WebSocket API)",
        description=(
            "Connect to the WebSocket API as ADDRESS and print a line per new message. "
            "The password is read from stdin when it is not a terminal, else prompted."
        ),
    )
    p.add_argument("address", metavar="ADDRESS", help="the account to watch")
    p.add_argument(
        "--url", help="ws:// or wss:// URL (default: the first [websocket] listen address)"
    )
    p.add_argument("--cafile", help="CA certificate to trust for wss:// (default: the system's)")
    p.add_argument("--json", action="store_true", help="print every event as JSON")
    p.set_defaults(func=cmd_watch)

    p = commands.add_parser(
        "dev",
        help="zero-config demo on 127.0.0.1",
        description=(
            "Run everything on unprivileged loopback ports with SQLite, a self-signed "
            "certificate and a demo account, and print the connection settings. "
            "Ignores --config."
        ),
    )
    p.add_argument("--data-dir", default="./mailstack-data", help="default: ./mailstack-data")
    p.add_argument("--domain", default="example.test", help="demo domain (default: example.test)")
    p.add_argument(
        "--capture",
        action="store_true",
        help="test mail server: accept mail for every address, keep it all in the demo "
        "account, relay nothing; fault injection on",
    )
    p.set_defaults(func=cmd_dev)

    _add_queue_commands(commands)

    # import / export live with their code (imported here: they use CliError).
    from mailstack.transfer.cli import add_commands as add_transfer_commands

    add_transfer_commands(commands)

    # dkim keygen / dns-records (email authentication) live with their code.
    from mailstack.smtp.mailauth_cli import add_commands as add_mailauth_commands

    add_mailauth_commands(commands)
    return parser


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) trio exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    debug = False
    try:
        args = build_parser().parse_args(argv)
        debug = args.debug
        config = Config() if args.command == "dev" else load_config(args.config)
        args.func(config, args)
    except BaseException as raised:
        exc = _first_leaf(raised)
        if isinstance(exc, SystemExit):  # --help, --version
            raise exc from None
        if isinstance(exc, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        if isinstance(exc, ConfigError):
            return _fail(str(exc), EXIT_CONFIG)
        if isinstance(exc, CliError | StoreError):
            return _fail(str(exc), EXIT_ERROR)
        if isinstance(exc, OSError) and not debug:
            # e.g. trio's "error while attempting to bind on address ...: address
            # already in use", or an unreadable file: the OS message says it.
            return _fail(str(exc), EXIT_ERROR)
        if debug or not isinstance(exc, Exception):
            raise
        return _fail(f"unexpected error: {type(exc).__name__}: {exc} (rerun with --debug)")
    return 0


def _fail(message: str, status: int = EXIT_ERROR) -> int:
    print(f"mailstack: {_one_line(message)}", file=sys.stderr)
    return status
