"""The unit's exact ExecStart, run the way systemd runs it.

For every service instance this build has (``mailstack@pop3``, ``@imap``,
later ``@smtp`` and ``@submission``) the command line is read from
systemd/mailstack@.service, with ``%i`` expanded and only the install paths
replaced (``/opt/mailstack/bin/mailstack`` by this interpreter's ``-m
mailstack``: the checkout is not installed in the venv; the config path by a
file in tmp_path).  Like systemd, the test owns the NOTIFY_SOCKET datagram
socket and sets WATCHDOG_USEC/WATCHDOG_PID; where the kernel has PR_SET_MDWE
(Linux 6.3+) the process runs under it, the kernel's version of the unit's
MemoryDenyWriteExecute=yes.

It checks: READY=1 arrives only when every port accepts connections; a login
works (store, argon2, TLS); WATCHDOG=1 pings come; after the certificate
files are replaced, SIGHUP makes the next TLS client see the new certificate
and applies the log level from the re-read config file;
SIGTERM gives STOPPING=1 and an exit with status 0 within the grace period;
and, once the SMTP server exists, SIGTERM in the middle of a DATA transfer
leaves the message either acknowledged and stored whole or refused and not
stored at all.
"""

from __future__ import annotations

import configparser
import ctypes
import imaplib
import os
import poplib
import shlex
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme

from mailstack import service
from mailstack.config import Config, load_config
from mailstack.store import migrate
from mailstack.store.store import Store
from tests.support.processes import process_exists
from tests.support.tls import served_dns_names

from .conftest import ACCOUNTS, create_accounts

SOURCE_ROOT = Path(__file__).resolve().parents[2]
UNIT = SOURCE_ROOT / "systemd" / "mailstack@.service"
INSTALLED_EXECUTABLE = "/opt/mailstack/bin/mailstack"
INSTALLED_CONFIG = "/etc/mailstack/mailstack.toml"
GRACE_SECONDS = 2.0
# systemd passes WatchdogSec= as WATCHDOG_USEC; 1 s keeps the test short.
WATCHDOG_USEC = 1_000_000
# (plain listener, implicit-TLS listener) per service, as the unit would run them.
PORTS = {
    "smtp": (True, False),
    "submission": (True, True),
    "imap": (True, True),
    "pop3": (True, True),
}
GREETINGS = {"smtp": b"220", "submission": b"220", "imap": b"* OK", "pop3": b"+OK"}
GOODBYES = {"submission": b"421", "imap": b"* BYE", "pop3": b"-ERR"}
ALICE = "alice@example.test"

# prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN) then exec the real command:
# from then on no memory can be made writable and executable.
MDWE_WRAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE failed: errno %d" % ctypes.get_errno())
os.execv(sys.argv[1], sys.argv[1:])
"""


def kernel_has_mdwe() -> bool:
    """PR_GET_MDWE (66) answers on kernels that can enforce it."""
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(66, 0, 0, 0, 0)) >= 0


def exec_start(instance: str, config_file: Path) -> list[str]:
    """The unit's ExecStart for ``mailstack@<instance>``, paths replaced."""
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"), source=str(UNIT))
    words = shlex.split(parser["Service"]["ExecStart"].replace("%i", instance))
    assert words[0] == INSTALLED_EXECUTABLE
    assert INSTALLED_CONFIG in words
    words[words.index(INSTALLED_CONFIG)] = str(config_file)
    command = [sys.executable, "-m", "mailstack", *words[1:]]
    if kernel_has_mdwe():
        command = [sys.executable, "-c", MDWE_WRAPPER, *command]
    return command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Instance:
    name: str
    config: Config
    ca: trustme.CA
    plain_port: int | None
    tls_port: int | None

    @property
    def ports(self) -> list[int]:
        return [p for p in (self.plain_port, self.tls_port) if p is not None]

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def reissue(self, *names: str) -> None:
        cert = self.ca.issue_cert(*names)
        cert.cert_chain_pems[0].write_to_path(self.config.tls.cert_file)
        cert.private_key_pem.write_to_path(self.config.tls.key_file)


def write_instance(tmp_path: Path, ca: trustme.CA, name: str) -> tuple[Path, Instance]:
    plain, implicit = PORTS[name]
    plain_port = free_port() if plain else None
    tls_port = free_port() if implicit else None
    cert_file, key_file = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    section = [f"[{name}]"]
    if plain_port is not None:
        section.append(f'listen = ["127.0.0.1:{plain_port}"]')
    if tls_port is not None:
        section.append(f'tls_listen = ["127.0.0.1:{tls_port}"]')
    if name == "smtp":  # no SPF/DKIM/DMARC lookups on the system's DNS
        section.append("authentication_checks = false")
        # As installed (etc/mailstack.toml): the writer process, under the
        # same MemoryDenyWriteExecute equivalent and through the SIGTERM.
        section += ["[database]", "writer_process = true"]
    config_file = tmp_path / "mailstack.toml"
    config_file.write_text(
        "\n".join(
            [
                'hostname = "localhost"',
                f'data_dir = "{tmp_path / "data"}"',
                "[tls]",
                f'cert_file = "{cert_file}"',
                f'key_file = "{key_file}"',
                # Cheap argon2id: the machine running the tests is shared.
                "[auth]",
                "argon2_time_cost = 1",
                "argon2_memory_kib = 1024",
                "argon2_parallelism = 1",
                "[service]",
                f"shutdown_grace_seconds = {GRACE_SECONDS}",
                *section,
                "",
            ]
        )
    )
    return config_file, Instance(name, load_config(config_file), ca, plain_port, tls_port)


async def prepare_store(config: Config) -> None:
    config.data_path.mkdir()
    await trio.to_thread.run_sync(migrate.upgrade, config.database_url)
    store = await Store.open(config)
    try:
        await create_accounts(store, config)
    finally:
        await store.aclose()


async def inbox_contents(config: Config, address: str) -> list[bytes]:
    store = await Store.open(config)
    try:
        account = await store.get_account(address)
        assert account is not None
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        messages = await store.list_messages(inbox.id)
        return [await store.read_content(m.content_id) for m in messages]
    finally:
        await store.aclose()


class Notifications:
    """The service manager's side of NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received: list[str] = []

    async def wait_for(self, assignment: str) -> None:
        while not any(assignment in message.split("\n") for message in self.received):
            await trio.lowlevel.wait_readable(self.sock)
            self.received.append(self.sock.recv(4096).decode())


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.setblocking(False)
        yield sock


async def certificate_names(instance: Instance) -> list[str]:
    assert instance.tls_port is not None
    return await served_dns_names("127.0.0.1", instance.tls_port, instance.client_context())


def pop3_login(instance: Instance) -> None:
    assert instance.tls_port is not None
    client = poplib.POP3_SSL(
        "127.0.0.1", instance.tls_port, context=instance.client_context(), timeout=30
    )
    try:
        client.user(ALICE)
        client.pass_(ACCOUNTS[ALICE])
        assert client.stat() == (0, 0)
    finally:
        client.quit()


def imap_login(instance: Instance) -> None:
    assert instance.tls_port is not None
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", instance.tls_port, ssl_context=instance.client_context(), timeout=30
    )
    try:
        client.login(ALICE, ACCOUNTS[ALICE])
        status, _data = client.select("INBOX")
        assert status == "OK"
    finally:
        client.logout()


FIRST_MESSAGE = b"From: sender@client.test\r\nSubject: first\r\n\r\nbefore the stop\r\n"


def smtp_first_message(instance: Instance) -> None:
    """One delivery before the stop: it starts the writer process."""
    assert instance.plain_port is not None
    with smtplib.SMTP("127.0.0.1", instance.plain_port, timeout=30) as client:
        assert client.sendmail("sender@client.test", [ALICE], FIRST_MESSAGE) == {}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


LOGINS: dict[str, Callable[[Instance], None]] = {
    "pop3": pop3_login,
    "imap": imap_login,
    "smtp": smtp_first_message,
}


async def read_reply(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    """One whole SMTP reply (RFC 5321 4.2.1: the last line has a space after
    the code); b"" when the server closed the connection."""
    lines = []
    while True:
        while b"\r\n" not in buffer:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return b""
            buffer += chunk
        line, _, rest = bytes(buffer).partition(b"\r\n")
        buffer[:] = rest
        lines.append(line)
        if line[3:4] != b"-":
            return b"\r\n".join(lines)


async def smtp_sigterm_during_data(
    instance: Instance, process: trio.Process, notifications: Notifications
) -> tuple[bytes, bytes]:
    """Start a DATA transfer, SIGTERM halfway, finish it; returns (the final
    reply or b"" if the connection was closed, the message body sent)."""
    assert instance.plain_port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", instance.plain_port)
    buffer = bytearray()
    assert (await read_reply(stream, buffer)).startswith(b"220")
    for command, expected in (
        (b"EHLO client.test", b"250"),
        (b"MAIL FROM:<sender@client.test>", b"250"),
        (f"RCPT TO:<{ALICE}>".encode(), b"250"),
        (b"DATA", b"354"),
    ):
        await stream.send_all(command + b"\r\n")
        assert (await read_reply(stream, buffer)).startswith(expected), command
    body = b"".join(b"line %d of a message cut by SIGTERM\r\n" % i for i in range(2000))
    message = b"From: sender@client.test\r\nSubject: shutdown\r\n\r\n" + body + b"END\r\n"
    half = len(message) // 2
    await stream.send_all(message[:half])
    process.send_signal(signal.SIGTERM)
    await notifications.wait_for("STOPPING=1")
    try:
        await stream.send_all(message[half:] + b".\r\n")
        reply = await read_reply(stream, buffer)
    except trio.BrokenResourceError:
        reply = b""
    await stream.aclose()
    return reply, message


def instances() -> list[str]:
    available = service.available_services()
    names = [name for name in PORTS if name in available]
    return names or ["pop3"]  # reported as a skip below


@pytest.mark.parametrize("name", instances())
async def test_unit_exec_start_lifecycle(
    name: str, tmp_path: Path, ca: trustme.CA, notify_socket: socket.socket
) -> None:
    if name not in service.available_services():
        pytest.skip(f"{name} not built yet")
    config_file, instance = write_instance(tmp_path, ca, name)
    await prepare_store(instance.config)
    env = {k: v for k, v in os.environ.items() if k not in ("MAILSTACK_CONFIG", "WATCHDOG_PID")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
    env["NOTIFY_SOCKET"] = notify_socket.getsockname()
    env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    notifications = Notifications(notify_socket)
    with (tmp_path / "stdout").open("wb") as stdout, (tmp_path / "stderr").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            exec_start(name, config_file), env=env, stdout=stdout, stderr=stderr
        )
    try:
        with trio.fail_after(60):
            await notifications.wait_for("READY=1")
            # READY=1 means every listener accepts: connect at once, no retry.
            for port in instance.ports:
                stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
                if port == instance.tls_port:
                    stream = trio.SSLStream(
                        stream, instance.client_context(), server_hostname="localhost"
                    )
                assert (await stream.receive_some(1024)).startswith(GREETINGS[name])
                await stream.aclose()
            if name in LOGINS:
                await trio.to_thread.run_sync(LOGINS[name], instance)
            writers: list[int] = []
            if name == "smtp":
                while not writers:  # the first message started the writer process
                    writers = children_of(process.pid)
                    await trio.sleep(0.05)
            await notifications.wait_for("WATCHDOG=1")

            if instance.tls_port is not None:
                assert "reloaded.test" not in await certificate_names(instance)
                instance.reissue("localhost", "127.0.0.1", "reloaded.test")
                with config_file.open("a") as f:
                    f.write('[logging]\nlevel = "debug"\n[database]\nmax_batch = 8\n')
                process.send_signal(signal.SIGHUP)
                # The reload runs in a worker thread after the signal arrives.
                for _ in range(200):
                    if "reloaded.test" in await certificate_names(instance):
                        break
                    await trio.sleep(0.05)
                else:
                    pytest.fail("SIGHUP did not bring the new certificate")
                assert process.returncode is None

            reply = message = None
            idle: trio.SocketStream | None = None
            if name == "smtp":
                reply, message = await smtp_sigterm_during_data(instance, process, notifications)
                stop_started = trio.current_time()
            else:
                # An idle session open at SIGTERM must not hold the stop up
                # beyond the grace period.
                idle = await trio.open_tcp_stream("127.0.0.1", instance.ports[0])
                assert (await idle.receive_some(1024)).startswith(GREETINGS[name])
                stop_started = trio.current_time()
                process.send_signal(signal.SIGTERM)
                await notifications.wait_for("STOPPING=1")
            assert await process.wait() == 0
            assert trio.current_time() - stop_started < GRACE_SECONDS + 3
            if idle is not None:
                # Told why before the close (RFC 5321 421, RFC 9051 * BYE,
                # RFC 1939 -ERR), not cut off.
                goodbye = await idle.receive_some(1024)
                assert goodbye.startswith(GOODBYES[name]), goodbye
                await idle.aclose()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = (tmp_path / "stderr").read_text()
    if instance.tls_port is not None:
        assert "INFO mailstack.tls reloaded certificate" in log
        assert "INFO mailstack.service SIGHUP: log level is now debug" in log
        assert "SIGHUP: changes to database take effect at the next restart" in log
    assert "INFO mailstack.service stopped" in log
    # The writer process ended with the server (it ignores SIGTERM itself).
    assert not [pid for pid in writers if process_exists(pid)]
    if reply is not None and message is not None:
        stored = await inbox_contents(instance.config, ALICE)
        assert stored[0].endswith(FIRST_MESSAGE)
        stored = stored[1:]
        if reply.startswith(b"250"):
            [raw] = stored
            assert raw.endswith(message), "acknowledged message not stored whole"
        else:
            assert stored == [], f"refused ({reply!r}) yet stored"


@pytest.mark.parametrize("name", ["queue", "websocket"])
async def test_listener_free_and_websocket_units_start_and_stop(
    name: str, tmp_path: Path, ca: trustme.CA, notify_socket: socket.socket
) -> None:
    """``mailstack@queue`` (no listener) and ``mailstack@websocket`` run from
    the unit's exact ExecStart: READY=1 once serving, STOPPING=1 and exit 0
    on SIGTERM, well within the grace period."""
    port = free_port()
    config_file = tmp_path / "mailstack.toml"
    section = (
        # An empty queue makes no lookups; the resolver is pinned anyway so
        # that nothing here could ever reach the system's DNS.
        '[outbound]\nenabled = true\n[dns]\nnameservers = ["127.0.0.1:9"]\n'
        if name == "queue"
        else f'[websocket]\nlisten = ["127.0.0.1:{port}"]\n'
    )
    config_file.write_text(
        f'hostname = "localhost"\ndata_dir = "{tmp_path / "data"}"\n'
        f"[service]\nshutdown_grace_seconds = {GRACE_SECONDS}\n" + section
    )
    await prepare_store(load_config(config_file))
    env = {k: v for k, v in os.environ.items() if k not in ("MAILSTACK_CONFIG", "WATCHDOG_PID")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
    env["NOTIFY_SOCKET"] = notify_socket.getsockname()
    notifications = Notifications(notify_socket)
    with (tmp_path / "stderr").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            exec_start(name, config_file), env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        with trio.fail_after(60):
            await notifications.wait_for("READY=1")
            if name == "websocket":
                # READY=1 means the listener accepts: an upgrade without
                # credentials is refused with 401 (docs/websocket.md).
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(
                    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                assert (await stream.receive_some(1024)).startswith(b"HTTP/1.1 401")
                await stream.aclose()
            stop_started = trio.current_time()
            process.send_signal(signal.SIGTERM)
            await notifications.wait_for("STOPPING=1")
            assert await process.wait() == 0
            assert trio.current_time() - stop_started < GRACE_SECONDS + 3
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "INFO mailstack.service stopped" in (tmp_path / "stderr").read_text()
