"""mailstack.check, one check at a time, on real files, sockets and databases.

The command as a whole (exit status, output) is tested in
tests/integration/test_ops_check.py.
"""

from __future__ import annotations

import datetime
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from mailstack import check
from mailstack.config import Config, DatabaseConfig, Endpoint, Pop3Config, TlsConfig
from mailstack.store import migrate

HOST = "mail.example.test"
NOW = datetime.datetime.now(datetime.UTC)


def write_pair(directory: Path, cert: trustme.LeafCert) -> tuple[Path, Path]:
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    key_file.write_bytes(cert.private_key_pem.bytes())
    return cert_file, key_file


def problems_for(directory: Path, cert: trustme.LeafCert) -> list[str]:
    cert_file, key_file = write_pair(directory, cert)
    return [str(p) for p in check.certificate_problems("tls", cert_file, key_file, HOST, now=NOW)]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_good_certificate(ca: trustme.CA, tmp_path: Path) -> None:
    assert problems_for(tmp_path, ca.issue_cert(HOST)) == []


def test_wildcard_names_the_host(ca: trustme.CA, tmp_path: Path) -> None:
    assert problems_for(tmp_path, ca.issue_cert("*.example.test")) == []
    # RFC 6125 6.4.3: the wildcard covers one label only.
    [problem] = problems_for(tmp_path, ca.issue_cert("*.test"))
    assert f"does not name {HOST} (*.test)" in problem


def test_certificate_for_another_host(ca: trustme.CA, tmp_path: Path) -> None:
    [problem] = problems_for(tmp_path, ca.issue_cert("other.example.test"))
    assert problem.startswith("tls.cert_file: ")
    assert f"does not name {HOST}" in problem


def test_key_that_does_not_match(ca: trustme.CA, tmp_path: Path) -> None:
    cert_file, key_file = write_pair(tmp_path, ca.issue_cert(HOST))
    key_file.write_bytes(ca.issue_cert(HOST).private_key_pem.bytes())
    [problem] = check.certificate_problems("tls", cert_file, key_file, HOST, now=NOW)
    assert str(problem) == f"tls: the key in {key_file} does not match the certificate {cert_file}"


def test_expiring_within_14_days(ca: trustme.CA, tmp_path: Path) -> None:
    soon = ca.issue_cert(HOST, not_after=NOW + datetime.timedelta(days=5, hours=1))
    [problem] = problems_for(tmp_path, soon)
    assert "expires on" in problem and "in 5 days (less than 14)" in problem
    later = ca.issue_cert(HOST, not_after=NOW + datetime.timedelta(days=15))
    assert problems_for(tmp_path, later) == []


def test_expired_and_not_yet_valid(ca: trustme.CA, tmp_path: Path) -> None:
    expired = ca.issue_cert(
        HOST,
        not_before=NOW - datetime.timedelta(days=100),
        not_after=NOW - datetime.timedelta(days=1),
    )
    [problem] = problems_for(tmp_path, expired)
    assert "expired on" in problem
    future = ca.issue_cert(
        HOST,
        not_before=NOW + datetime.timedelta(days=1),
        not_after=NOW + datetime.timedelta(days=100),
    )
    [problem] = problems_for(tmp_path, future)
    assert "is not valid before" in problem


def test_unreadable_or_garbage_files(ca: trustme.CA, tmp_path: Path) -> None:
    cert_file, key_file = write_pair(tmp_path, ca.issue_cert(HOST))
    missing = tmp_path / "missing.pem"
    [problem] = check.certificate_problems("tls", missing, key_file, HOST)
    assert str(problem).startswith(f"tls.cert_file: cannot read {missing}")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    [problem] = check.certificate_problems("tls", garbage, key_file, HOST)
    assert str(problem) == f"tls.cert_file: {garbage} holds no PEM certificate"
    [problem] = check.certificate_problems("tls", cert_file, garbage, HOST)
    assert str(problem).startswith(f"tls.key_file: {garbage}: ")


def test_encrypted_key(ca: trustme.CA, tmp_path: Path) -> None:
    cert_file, key_file = write_pair(tmp_path, ca.issue_cert(HOST))
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    [problem] = check.certificate_problems("tls", cert_file, key_file, HOST)
    assert "encrypted" in str(problem)


def test_tls_problems_cover_both_sections(ca: trustme.CA, tmp_path: Path) -> None:
    cert_file, key_file = write_pair(tmp_path, ca.issue_cert("elsewhere.test"))
    config = Config(hostname=HOST).replace(tls=TlsConfig(str(cert_file), str(key_file)))
    assert [p.subject for p in check.tls_problems(config)] == ["tls.cert_file"]
    # Without [tls] files mailstack generates its own: nothing to check.
    assert check.tls_problems(Config()) == []


def test_data_dir(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path / "data"))
    [problem] = check.data_dir_problems(config)
    assert "does not exist" in str(problem)
    (tmp_path / "data").write_text("a file")
    [problem] = check.data_dir_problems(config)
    assert str(problem) == f"data_dir: {tmp_path / 'data'} is not a directory"
    (tmp_path / "data").unlink()
    (tmp_path / "data").mkdir()
    assert check.data_dir_problems(config) == []
    assert list((tmp_path / "data").iterdir()) == []  # the probe file is gone


def test_database_states(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path))
    db_file = tmp_path / "mailstack.db"
    [problem] = check.database_problems(config)
    assert "not initialised" in str(problem) and "mailstack db upgrade" in str(problem)
    assert not db_file.exists()  # checking created nothing

    sqlite3.connect(db_file).close()
    [problem] = check.database_problems(config)
    assert "database is empty" in str(problem)

    with sqlite3.connect(db_file) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('0000_older')")
    [problem] = check.database_problems(config)
    assert "at revision 0000_older" in str(problem)

    db_file.unlink()
    migrate.upgrade(config.database_url)
    assert check.database_problems(config) == []


def test_unreachable_database() -> None:
    url = f"postgresql+psycopg://mailstack:secret@127.0.0.1:{free_port()}/mailstack"
    [problem] = check.database_problems(Config(database=DatabaseConfig(url=url)))
    assert str(problem).startswith("database: cannot reach the database: ")
    assert "secret" not in str(problem)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_bind_problem(busy_port: int) -> None:
    reason = check.bind_problem(Endpoint("127.0.0.1", busy_port))
    assert reason is not None and "already in use" in reason
    assert check.bind_problem(Endpoint("127.0.0.1", free_port())) is None
    # An address this host does not have.
    assert check.bind_problem(Endpoint("192.0.2.1", free_port())) is not None
    reason = check.bind_problem(Endpoint("no-such-host.invalid", 25))
    assert reason is not None and "cannot resolve" in reason


def test_port_problems(busy_port: int) -> None:
    port = free_port()
    config = Config(
        pop3=Pop3Config(
            listen=(Endpoint("127.0.0.1", busy_port), Endpoint("127.0.0.1", 0)),
            tls_listen=(Endpoint("127.0.0.1", port), Endpoint("127.0.0.1", port)),
        )
    )
    problems = [str(p) for p in check.port_problems(config, ["pop3"])]
    assert problems == [
        f"pop3.listen: cannot listen on 127.0.0.1:{busy_port}: address already in use"
        " (is mailstack or another server running?)",
        f"pop3.tls_listen: 127.0.0.1:{port} is also in pop3.tls_listen",
    ]
