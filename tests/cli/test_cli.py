"""The real ``mailstack`` command in a subprocess, against SQLite in tmp_path."""

from __future__ import annotations

import argparse
import imaplib
import os
import pty
import queue
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

import mailstack
from mailstack import cli
from mailstack.auth.passwords import PasswordHasher
from mailstack.cli import DEV_HOST, DEV_PORTS, DEV_WEBSOCKET_PORT, build_parser, dev_config
from mailstack.config import Config, load_config
from mailstack.store.store import Store

# The checkout's package, whether or not it is installed into the venv.
SOURCE_ROOT = str(Path(mailstack.__file__).resolve().parents[1])


def _command_paths(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
    """Every command and subcommand the real parser knows (so new ones are covered)."""
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _command_paths(sub, [*prefix, name])
    return paths


COMMANDS_WITH_HELP = _command_paths(build_parser(), [])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILSTACK_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
    return env


def mailstack_cmd(
    *args: str, config: Path | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "mailstack"]
    if config is not None:
        argv += ["--config", str(config)]
    return subprocess.run(
        [*argv, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )


def assert_fails(result: subprocess.CompletedProcess[str], status: int, *needles: str) -> None:
    assert result.returncode == status, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mailstack: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def assert_ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result
    assert result.stderr == ""
    return result.stdout


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "mailstack.toml"
    path.write_text(
        f'hostname = "mail.example.test"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        "[auth]\n"
        "argon2_time_cost = 1\n"
        "argon2_memory_kib = 64\n"
        "argon2_parallelism = 1\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def db(config_file: Path) -> Path:
    """A config whose database is migrated, with domain example.test."""
    assert_ok(mailstack_cmd("db", "upgrade", config=config_file))
    assert_ok(mailstack_cmd("domain", "add", "example.test", config=config_file))
    return config_file


def stored_hash(config: Config, address: str) -> str | None:
    """The password hash the real store holds for ``address``."""

    async def lookup() -> str | None:
        store = await Store.open(config)
        try:
            account = await store.get_account(address)
        finally:
            await store.aclose()
        return None if account is None else account.password_hash

    return trio.run(lookup)


# -- help and usage ------------------------------------------------------------


@pytest.mark.parametrize("words", COMMANDS_WITH_HELP, ids=" ".join)
def test_help_on_every_command(words: list[str]) -> None:
    assert len(COMMANDS_WITH_HELP) >= 19  # db, domain, user, alias, serve, dev and actions
    result = mailstack_cmd(*words, "--help")
    assert result.returncode == 0, result
    assert result.stdout.startswith(f"usage: mailstack {' '.join(words)}".rstrip())
    assert result.stderr == ""


def test_usage_errors_are_one_line_exit_1() -> None:
    assert_fails(mailstack_cmd(), 1, "required")
    assert_fails(mailstack_cmd("user"), 1, "required", "mailstack user --help")
    assert_fails(mailstack_cmd("frobnicate"), 1, "invalid choice")
    assert_fails(mailstack_cmd("domain", "add"), 1, "DOMAIN")
    assert_fails(mailstack_cmd("user", "quota", "a@b.test", "--bytes", "-5"), 1, "non-negative")


# -- configuration errors: exit 2 ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("hostname = \n", "not valid TOML"),
        ("[smtp]\nlisten = ['0.0.0.0:99999']\n", "smtp.listen[0]: port 99999"),
        ("[imap]\nmax_line_bytes = 'big'\n", "imap.max_line_bytes: expected an integer"),
        ("colour = 'blue'\n", "colour: unknown key"),
        (
            "[tls]\ncert_file = '/nonexistent/cert.pem'\nkey_file = '/nonexistent/key.pem'\n",
            "tls.cert_file: file not found",
        ),
    ],
)
def test_broken_config_exits_2_with_one_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    result = mailstack_cmd("domain", "list", config=path)
    assert_fails(result, 2, str(path), needle)


def test_config_from_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("nonsense = 1\n", encoding="utf-8")
    argv = [sys.executable, "-m", "mailstack", "domain", "list"]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={**_env(), "MAILSTACK_CONFIG": str(path)},
        timeout=60,
        check=False,
    )
    assert_fails(result, 2, str(path), "nonsense: unknown key")


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    assert_fails(mailstack_cmd("domain", "list", config=tmp_path / "no.toml"), 2, "not found")


def test_unwritable_data_dir_exits_2(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "c.toml"
    path.write_text(f'data_dir = "{tmp_path / "file" / "data"}"\n', encoding="utf-8")
    assert_fails(mailstack_cmd("db", "upgrade", config=path), 2, "data_dir: cannot create")


# -- database -------------------------------------------------------------------


def test_db_upgrade_creates_data_dir_and_is_idempotent(config_file: Path, tmp_path: Path) -> None:
    assert not (tmp_path / "data").exists()
    assert_ok(mailstack_cmd("db", "upgrade", config=config_file))
    assert (tmp_path / "data" / "mailstack.db").is_file()
    assert_ok(mailstack_cmd("db", "upgrade", config=config_file))
    assert_ok(mailstack_cmd("domain", "add", "example.test", config=config_file))
    assert_ok(mailstack_cmd("db", "upgrade", config=config_file))
    assert assert_ok(mailstack_cmd("domain", "list", config=config_file)) == "example.test\n"


def test_database_not_initialised(config_file: Path, tmp_path: Path) -> None:
    # No data_dir at all, then an empty database file: both say what to do.
    result = mailstack_cmd("domain", "list", config=config_file)
    assert_fails(result, 1, "not initialised", "mailstack db upgrade")
    assert not (tmp_path / "data").exists()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mailstack.db").touch()
    result = mailstack_cmd("user", "add", "a@example.test", config=config_file, stdin="pw\n")
    assert_fails(result, 1, "mailstack db upgrade")


def test_serve_refuses_an_uninitialised_database(config_file: Path) -> None:
    assert_fails(mailstack_cmd("serve", "imap", config=config_file), 1, "mailstack db upgrade")


# -- domains ---------------------------------------------------------------------


def test_domain_add_list_del(db: Path) -> None:
    assert_ok(mailstack_cmd("domain", "add", "other.test", config=db))
    listed = assert_ok(mailstack_cmd("domain", "list", config=db)).split()
    assert sorted(listed) == ["example.test", "other.test"]
    assert_fails(mailstack_cmd("domain", "add", "other.test", config=db), 1, "other.test")
    assert_ok(mailstack_cmd("domain", "del", "other.test", config=db))
    assert assert_ok(mailstack_cmd("domain", "list", config=db)).split() == ["example.test"]
    assert_fails(mailstack_cmd("domain", "del", "other.test", config=db), 1, "other.test")


def test_malformed_domain_refused(db: Path) -> None:
    assert_fails(mailstack_cmd("domain", "add", "not a domain", config=db), 1)


# -- users -------------------------------------------------------------------------


def test_user_add_reads_password_from_stdin(db: Path) -> None:
    out = assert_ok(mailstack_cmd("user", "add", "alice@example.test", config=db, stdin="s3cret\n"))
    assert "alice@example.test" in out
    hasher = PasswordHasher(load_config(db).auth)
    password_hash = stored_hash(load_config(db), "alice@example.test")
    assert password_hash is not None
    assert hasher.verify(password_hash, "s3cret")
    assert not hasher.verify(password_hash, "s3cret\n")
    assert assert_ok(mailstack_cmd("user", "list", config=db)) == "alice@example.test\n"


def test_duplicate_account(db: Path) -> None:
    assert_ok(mailstack_cmd("user", "add", "alice@example.test", config=db, stdin="pw1\n"))
    result = mailstack_cmd("user", "add", "alice@example.test", config=db, stdin="pw2\n")
    assert_fails(result, 1, "alice@example.test", "already exists")


@pytest.mark.parametrize("address", ["alice", "@example.test", "alice@", "a b@example.test"])
def test_malformed_address(db: Path, address: str) -> None:
    assert_fails(mailstack_cmd("user", "add", address, config=db, stdin="pw\n"), 1)
    assert assert_ok(mailstack_cmd("user", "list", config=db)) == ""


def test_unknown_domain(db: Path) -> None:
    result = mailstack_cmd("user", "add", "bob@nowhere.test", config=db, stdin="pw\n")
    assert_fails(result, 1, "nowhere.test", "mailstack domain add nowhere.test")


@pytest.mark.parametrize("stdin", ["", "\n", "\r\n"])
def test_empty_password_refused(db: Path, stdin: str) -> None:
    result = mailstack_cmd("user", "add", "alice@example.test", config=db, stdin=stdin)
    assert_fails(result, 1, "empty password")
    assert assert_ok(mailstack_cmd("user", "list", config=db)) == ""


def test_too_long_password_refused(db: Path) -> None:
    result = mailstack_cmd("user", "add", "alice@example.test", config=db, stdin="x" * 256)
    assert_fails(result, 1, "longer than 255")


def test_user_passwd(db: Path) -> None:
    assert_ok(mailstack_cmd("user", "add", "alice@example.test", config=db, stdin="old\n"))
    assert_ok(mailstack_cmd("user", "passwd", "alice@example.test", config=db, stdin="new pw\n"))
    hasher = PasswordHasher(load_config(db).auth)
    password_hash = stored_hash(load_config(db), "alice@example.test")
    assert password_hash is not None
    assert hasher.verify(password_hash, "new pw")
    assert not hasher.verify(password_hash, "old")
    result = mailstack_cmd("user", "passwd", "nobody@example.test", config=db, stdin="x\n")
    assert_fails(result, 1, "no such account")


def test_user_del(db: Path) -> None:
    assert_ok(mailstack_cmd("user", "add", "alice@example.test", config=db, stdin="pw\n"))
    assert_ok(mailstack_cmd("user", "add", "bob@example.test", config=db, stdin="pw\n"))
    assert_ok(mailstack_cmd("user", "del", "alice@example.test", config=db))
    assert assert_ok(mailstack_cmd("user", "list", config=db)) == "bob@example.test\n"
    assert stored_hash(load_config(db), "alice@example.test") is None
    assert_fails(mailstack_cmd("user", "del", "alice@example.test", config=db), 1)


def test_user_quota(db: Path) -> None:
    assert_ok(mailstack_cmd("user", "add", "alice@example.test", config=db, stdin="pw\n"))
    out = assert_ok(
        mailstack_cmd("user", "quota", "alice@example.test", "--bytes", "1000", config=db)
    )
    assert "1000 bytes" in out
    assert_ok(mailstack_cmd("user", "quota", "alice@example.test", "--messages", "5", config=db))
    listed = assert_ok(mailstack_cmd("user", "list", config=db))
    assert "1000 bytes" in listed and "5 messages" in listed  # --messages kept --bytes
    assert_ok(mailstack_cmd("user", "quota", "alice@example.test", "--none", config=db))
    assert assert_ok(mailstack_cmd("user", "list", config=db)) == "alice@example.test\n"
    assert_fails(mailstack_cmd("user", "quota", "alice@example.test", config=db), 1, "--none")
    assert_fails(
        mailstack_cmd("user", "quota", "alice@example.test", "--none", "--bytes", "1", config=db),
        1,
        "cannot be combined",
    )
    result = mailstack_cmd("user", "quota", "nobody@example.test", "--bytes", "1", config=db)
    assert_fails(result, 1, "no such account")


def run_on_terminal(argv: list[str], answers: list[str]) -> tuple[int, str]:
    """Run the command on a pseudo-terminal (so getpass prompts), answering
    each prompt in turn; returns (exit status, everything it wrote)."""
    pid, fd = pty.fork()
    if pid == 0:  # child: becomes the command, the pty is its controlling terminal
        try:
            os.execve(sys.executable, [sys.executable, "-m", "mailstack", *argv], _env())
        finally:
            os._exit(127)  # never return into pytest in the forked child
    output = b""
    pending = list(answers)
    answered = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 1.0)
            if not readable:
                continue
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the child has exited and closed the terminal
                break
            if not chunk:
                break
            output += chunk
            # Answer each prompt once: only output after the last answer counts.
            if pending and output[answered:].rstrip().lower().endswith(b"password:"):
                os.write(fd, pending.pop(0).encode() + b"\n")
                answered = len(output)
    finally:
        os.close(fd)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
        _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status), output.decode(errors="replace")


def test_password_prompted_twice_on_a_terminal(db: Path) -> None:
    argv = ["--config", str(db), "user", "add", "alice@example.test"]
    status, output = run_on_terminal(argv, ["first", "second"])
    assert status == 1, output
    assert "mailstack: passwords do not match" in output
    assert stored_hash(load_config(db), "alice@example.test") is None

    status, output = run_on_terminal(argv, ["s3cret pw", "s3cret pw"])
    assert status == 0, output
    assert "Password:" in output and "Repeat password:" in output
    assert "s3cret" not in output  # getpass does not echo
    password_hash = stored_hash(load_config(db), "alice@example.test")
    assert password_hash is not None
    assert PasswordHasher(load_config(db).auth).verify(password_hash, "s3cret pw")


def test_ctrl_c_exits_130_quietly(db: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "mailstack",
        "--config",
        str(db),
        "user",
        "add",
        "alice@example.test",
    ]
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    ) as proc:
        time.sleep(2)  # the command is now waiting for the password on stdin
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err == ""


# -- aliases ----------------------------------------------------------------------


def test_alias_add_list_del(db: Path) -> None:
    for name in ("alice", "bob"):
        assert_ok(mailstack_cmd("user", "add", f"{name}@example.test", config=db, stdin="pw\n"))
    assert_ok(
        mailstack_cmd(
            "alias", "add", "team@example.test", "alice@example.test, bob@example.test", config=db
        )
    )
    assert_ok(mailstack_cmd("alias", "add", "@example.test", "alice@example.test", config=db))
    listed = assert_ok(mailstack_cmd("alias", "list", config=db)).splitlines()
    assert sorted(listed) == [
        "@example.test -> alice@example.test",
        "team@example.test -> alice@example.test, bob@example.test",
    ]
    assert_fails(
        mailstack_cmd("alias", "add", "team@example.test", "bob@example.test", config=db),
        1,
        "team@example.test",
    )
    assert_ok(mailstack_cmd("alias", "del", "@example.test", config=db))
    listed = assert_ok(mailstack_cmd("alias", "list", config=db)).splitlines()
    assert listed == ["team@example.test -> alice@example.test, bob@example.test"]
    assert_fails(mailstack_cmd("alias", "del", "@example.test", config=db), 1)


def test_alias_needs_targets_and_a_local_domain(db: Path) -> None:
    assert_fails(mailstack_cmd("alias", "add", "x@example.test", " , ", config=db), 1, "target")
    result = mailstack_cmd("alias", "add", "x@elsewhere.test", "a@example.test", config=db)
    assert_fails(result, 1, "elsewhere.test")


def test_serve_unknown_service(db: Path) -> None:
    # A config error (exit 2): a systemd unit `mailstack serve %i` must not restart-loop.
    assert_fails(mailstack_cmd("serve", "gopher", config=db), 2, "gopher", "unknown service")


# -- mailstack dev ------------------------------------------------------------------

DEV_PORT_LIST = [p for pair in DEV_PORTS.values() for p in pair if p] + [DEV_WEBSOCKET_PORT]


def _ports_free() -> bool:
    for port in DEV_PORT_LIST:
        with socket.socket() as sock:
            # As the server's listeners do, so that TIME-WAIT leftovers don't count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((DEV_HOST, port))
            except OSError:
                return False
    return True


def imap_login(password: str, cafile: Path) -> None:
    """Log in as the demo user over IMAP, plain and implicit TLS, once the port is up."""
    plain_port, tls_port = DEV_PORTS["imap"]
    assert tls_port is not None
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((DEV_HOST, tls_port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "mailstack dev never listened on IMAP"
            time.sleep(0.1)
    with imaplib.IMAP4(DEV_HOST, plain_port, timeout=10) as imap:
        assert imap.login("demo@example.test", password)[0] == "OK"
    context = ssl.create_default_context(cafile=str(cafile))
    with imaplib.IMAP4_SSL(DEV_HOST, tls_port, ssl_context=context, timeout=10) as imap:
        assert imap.login("demo@example.test", password)[0] == "OK"


def run_dev_until_banner(
    data_dir: Path, then: Callable[[str], None] = lambda banner: None
) -> tuple[str, str, int]:
    """Start `mailstack dev`, read its banner, call ``then(banner)``, stop it
    with Ctrl-C (SIGINT)."""
    argv = [sys.executable, "-m", "mailstack", "dev", "--data-dir", str(data_dir)]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    ) as proc:
        try:
            assert proc.stdout is not None
            # A thread reads the banner so that the wait for it is bounded.
            stdout = proc.stdout
            lines: queue.Queue[str] = queue.Queue()
            banner: list[str] = []
            deadline = time.monotonic() + 60
            while not banner or "Ctrl-C" not in banner[-1]:
                threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                assert line, "mailstack dev exited before printing its banner"
                banner.append(line)
            try:
                then("".join(banner))
            finally:
                proc.send_signal(signal.SIGINT)
            rest, err = proc.communicate(timeout=60)
        except BaseException:
            # Never leave a server behind (nor hang in Popen.__exit__'s wait).
            proc.kill()
            raise
    return "".join(banner) + rest, err, proc.returncode


def test_dev_passwords_are_letters_and_digits(tmp_path: Path) -> None:
    # The README passes the password to swaks and curl as an argument: one
    # that began with "-" was read as an option ("Unknown option").
    folders = [tmp_path / str(n) for n in range(200)]
    for folder in folders:
        folder.mkdir()
    passwords = {cli._demo_password(folder) for folder in folders}
    assert len(passwords) == 200
    assert all(len(p) == 16 and p.isascii() and p.isalnum() for p in passwords)


@pytest.mark.skipif(not _ports_free(), reason="mailstack dev ports are in use on this host")
def test_dev_prints_settings_and_keeps_the_password(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    out, err, status = run_dev_until_banner(data_dir)
    assert status in (0, 130), err
    assert "Traceback" not in err
    for port in DEV_PORT_LIST:
        assert str(port) in out
    assert "demo@example.test" in out
    password = next(line.split()[-1] for line in out.splitlines() if "password" in line)
    assert (data_dir / "demo-password").read_text().strip() == password
    cert = data_dir / "tls" / "cert.pem"
    assert cert.is_file() and str(cert.resolve()) in out

    # A second run prints the same password, and a real client logs in with it.
    out_again, err, status = run_dev_until_banner(data_dir, lambda _: imap_login(password, cert))
    assert status in (0, 130), err
    assert f"password    {password}" in out_again

    config = dev_config(data_dir)
    password_hash = stored_hash(config, "demo@example.test")
    assert password_hash is not None
    assert PasswordHasher(config.auth).verify(password_hash, password)


# -- the outbound queue --------------------------------------------------------------


def test_queue_list_retry_delete(db: Path) -> None:
    from mailstack.store.records import Outgoing

    assert assert_ok(mailstack_cmd("queue", "list", config=db)) == "the queue is empty\n"

    async def enqueue() -> int:
        store = await Store.open(load_config(db))
        try:
            return await store.enqueue(
                Outgoing("alice@example.test", ("bob@remote.test",)), b"Subject: q\r\n\r\nx\r\n"
            )
        finally:
            await store.aclose()

    message_id = trio.run(enqueue)
    listed = assert_ok(mailstack_cmd("queue", "list", config=db)).splitlines()
    assert listed[0].startswith(f"{message_id}  queued ")
    assert listed[0].endswith("bytes  from <alice@example.test>")
    assert listed[1] == "    <bob@remote.test>  due now, 0 attempts"
    assert listed[2] == "1 message, 1 recipient waiting"
    # Already due: nothing to move; an unknown id is one clear line.
    assert "0 recipients due now" in assert_ok(mailstack_cmd("queue", "retry", config=db))
    assert_fails(mailstack_cmd("queue", "retry", "999", config=db), 1, "no queued message 999")
    out = assert_ok(mailstack_cmd("queue", "delete", str(message_id), config=db))
    assert out == f"deleted message {message_id} from the queue (1 recipient waiting)\n"
    assert_fails(mailstack_cmd("queue", "delete", str(message_id), config=db), 1, "no queued")
    assert_fails(mailstack_cmd("serve", "queue", config=db), 2, "outbound.enabled")
