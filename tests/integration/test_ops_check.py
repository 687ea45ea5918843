"""`mailstack check` as an operator runs it: the real command in a subprocess,
on a good installation and on each kind of broken one.

Exit status 0 = ready; 1 = problems, one line each on stdout and a count on
stderr; 2 = the configuration itself is wrong (what RestartPreventExitStatus=
names in the unit).
"""

from __future__ import annotations

import datetime
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from mailstack.cli import EXIT_CONFIG, EXIT_ERROR
from mailstack.store import migrate

SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
HOST = "mail.example.test"


@dataclass
class Install:
    """A small installation in tmp_path: config, certificate, migrated database."""

    root: Path
    ca: trustme.CA
    port: int

    @property
    def config_file(self) -> Path:
        return self.root / "mailstack.toml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def write_config(self, extra: str = "") -> None:
        self.config_file.write_text(
            f'hostname = "{HOST}"\n'
            f'data_dir = "{self.data_dir}"\n'
            f"{extra}"
            f'[tls]\ncert_file = "{self.root / "cert.pem"}"\nkey_file = "{self.root / "key.pem"}"\n'
            f'[pop3]\nlisten = ["127.0.0.1:{self.port}"]\n'
        )

    def issue(
        self,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> trustme.LeafCert:
        cert = self.ca.issue_cert(HOST, not_before=not_before, not_after=not_after)
        cert.cert_chain_pems[0].write_to_path(str(self.root / "cert.pem"))
        cert.private_key_pem.write_to_path(str(self.root / "key.pem"))
        return cert

    def check(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "MAILSTACK_CONFIG"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "mailstack", "--config", str(self.config_file)]
        return subprocess.run(
            [*command, "check", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def install(tmp_path: Path, ca: trustme.CA) -> Install:
    setup = Install(tmp_path, ca, free_port())
    setup.write_config()
    setup.issue()
    setup.data_dir.mkdir()
    migrate.upgrade(f"sqlite:///{setup.data_dir / 'mailstack.db'}")
    return setup


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The problem lines, after checking the failure shape."""
    assert result.returncode == EXIT_ERROR, result
    lines = result.stdout.splitlines()
    assert result.stderr == f"mailstack: {len(lines)} problem(s) found\n"
    return lines


def test_good_install(install: Install) -> None:
    result = install.check()
    assert result.returncode == 0, result
    assert result.stdout == f"ok: ready to serve ({install.config_file})\n"
    assert result.stderr == ""
    assert install.check("pop3").returncode == 0


def test_config_error_is_status_2(install: Install) -> None:
    install.write_config("no_such_key = 1\n")
    result = install.check()
    assert result.returncode == EXIT_CONFIG
    assert result.stdout == ""
    assert result.stderr == f"mailstack: {install.config_file}: no_such_key: unknown key\n"


def test_missing_certificate_is_a_config_error(install: Install) -> None:
    (install.root / "cert.pem").unlink()
    result = install.check()
    assert result.returncode == EXIT_CONFIG
    assert "tls.cert_file: file not found" in result.stderr


def test_service_that_is_not_configured(install: Install) -> None:
    result = install.check("imap")
    assert result.returncode == EXIT_CONFIG
    assert "imap.listen: no listen or tls_listen address configured" in result.stderr


def test_key_does_not_match(install: Install) -> None:
    other = install.ca.issue_cert(HOST)
    other.private_key_pem.write_to_path(str(install.root / "key.pem"))
    [line] = problems(install.check())
    assert line.startswith("tls: the key in ") and "does not match the certificate" in line


def test_certificate_expiring_soon(install: Install) -> None:
    now = datetime.datetime.now(datetime.UTC)
    install.issue(not_after=now + datetime.timedelta(days=3, hours=1))
    [line] = problems(install.check())
    assert line.startswith("tls.cert_file: ") and "in 3 days (less than 14)" in line


def test_certificate_expired(install: Install) -> None:
    now = datetime.datetime.now(datetime.UTC)
    install.issue(
        not_before=now - datetime.timedelta(days=90), not_after=now - datetime.timedelta(hours=1)
    )
    [line] = problems(install.check())
    assert "expired on" in line


def test_data_dir_not_writable(install: Install) -> None:
    # The tests run as root, who may write anywhere; a plain file in place of
    # the directory fails for everyone.  The database lives there too, so
    # that is the one line.
    for child in install.data_dir.iterdir():
        child.unlink()
    install.data_dir.rmdir()
    install.data_dir.write_text("")
    [line] = problems(install.check())
    assert line == f"data_dir: {install.data_dir} is not a directory"


def test_database_not_initialised(install: Install) -> None:
    for child in install.data_dir.iterdir():
        child.unlink()
    [line] = problems(install.check())
    assert line.startswith("database: not initialised (") and "mailstack db upgrade" in line
    assert list(install.data_dir.iterdir()) == []


def test_database_behind_the_latest_migration(install: Install) -> None:
    with sqlite3.connect(install.data_dir / "mailstack.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0000_older'")
    [line] = problems(install.check())
    assert line.startswith("database: the database is at revision 0000_older, not ")


@pytest.fixture
def port_in_use(install: Install) -> Iterator[None]:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", install.port))
        sock.listen()
        yield


@pytest.mark.usefixtures("port_in_use")
def test_port_in_use(install: Install) -> None:
    [line] = problems(install.check())
    assert line == (
        f"pop3.listen: cannot listen on 127.0.0.1:{install.port}: address already in use"
        " (is mailstack or another server running?)"
    )


@pytest.mark.usefixtures("port_in_use")
def test_every_problem_is_reported(install: Install) -> None:
    other = install.ca.issue_cert("other.example.test")
    other.cert_chain_pems[0].write_to_path(str(install.root / "cert.pem"))
    (install.data_dir / "mailstack.db").unlink()
    lines = problems(install.check())
    assert [line.split(":", 1)[0] for line in lines] == [
        "tls",
        "tls.cert_file",
        "database",
        "pop3.listen",
    ]
