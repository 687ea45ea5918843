"""Two front-end hosts on one PostgreSQL database, as real processes.

Each host is its own ``mailstack serve`` process (its own config file and
data_dir, the shared database URL and certificate; tests/support/frontends.py)
on its own loopback ports.  They share nothing but the database, so what one
host learns of the other's work came through PostgreSQL: UIDs allocated
under the database's locks, LISTEN/NOTIFY waking IDLE, maildrop locks as rows.

The tests that stop or restart the database server run only when
MAILSTACK_TEST_PG_CTL holds the command that controls it, such as
``pg_ctlcluster 15 main`` (``.ci/run`` sets it: CI runs the suite serially;
elsewhere a restart would break other test runs sharing the server).
"""

from __future__ import annotations

import imaplib
import os
import poplib
import shlex
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme
from imapclient import IMAPClient

from tests.support.frontends import SOURCE_ROOT, Host, prepare_database, running_hosts
from tests.support.pg import PG_URL, fresh_schema

from .conftest import ACCOUNTS

pytestmark = pytest.mark.skipif(not PG_URL, reason="MAILSTACK_TEST_PG_URL is not set")

ALICE = "alice@example.test"
PASSWORD = ACCOUNTS[ALICE]
# e.g. "pg_ctlcluster 15 main": the test appends stop, start or restart.
PG_CTL = shlex.split(os.environ.get("MAILSTACK_TEST_PG_CTL", ""))
needs_pg_ctl = pytest.mark.skipif(not PG_CTL, reason="MAILSTACK_TEST_PG_CTL is not set")
DELIVERIES = 200
SENDERS_PER_HOST = 8
IDLE_ROUNDS = 10
# The must-show bound for a delivery on host A to reach IDLE on host B.
IDLE_SECONDS = 1.0


@dataclass
class Cluster:
    url: str
    hosts: list[Host]


def message(subject: str) -> bytes:
    return (
        f"From: carol@remote.test\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n\r\nBody of {subject}.\r\n"
    ).encode()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    with fresh_schema("scaleout") as url:
        yield url


@pytest.fixture
async def cluster(pg_schema: str, ca: trustme.CA, tmp_path: Path) -> AsyncIterator[Cluster]:
    await prepare_database(pg_schema, tmp_path)
    # One certificate for every host: clients reach them under one name.
    cert = ca.issue_cert("mail.example.test", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    with running_hosts(
        tmp_path, 2, database_url=pg_schema, cert_file=cert_file, key_file=key_file
    ) as hosts:
        yield Cluster(pg_schema, hosts)
        for host in hosts:
            assert host.process.poll() is None, f"{host.name} died: {host.log()}"


def send_batch(port: int, subjects: list[str]) -> None:
    """One SMTP connection delivering each message in turn (each acknowledged)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for subject in subjects:
            client.sendmail("carol@remote.test", [ALICE], message(subject))


def uids_by_subject(port: int) -> dict[str, int]:
    with IMAPClient("127.0.0.1", port=port, ssl=False, timeout=30) as client:
        client.login(ALICE, PASSWORD)
        client.select_folder("INBOX", readonly=True)
        # imapclient's default use_uid: SEARCH returns UIDs, FETCH is keyed by UID.
        fetched = client.fetch(client.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        found = {}
        for uid, data in fetched.items():
            header = data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip()
            found[header.removeprefix("Subject: ")] = uid
        status = client.folder_status("INBOX", ["UIDNEXT", "MESSAGES"])
        assert status[b"MESSAGES"] == len(fetched)
        assert not found or status[b"UIDNEXT"] > max(found.values())
        return found


async def test_concurrent_deliveries_through_both_hosts(cluster: Cluster) -> None:
    senders = [
        (host.port("smtp"), [f"m{n}" for n in range(index, DELIVERIES, SENDERS_PER_HOST * 2)])
        for index, host in enumerate(cluster.hosts * SENDERS_PER_HOST)
    ]
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for port, subjects in senders:
                nursery.start_soon(trio.to_thread.run_sync, send_batch, port, subjects)
        found = await trio.to_thread.run_sync(uids_by_subject, cluster.hosts[1].port("imap"))
    assert sorted(found) == sorted(f"m{n}" for n in range(DELIVERIES))
    assert len(set(found.values())) == DELIVERIES  # distinct UIDs
    for _, subjects in senders:
        # Each sender waited for 250 before its next message, so its
        # messages were committed in order and their UIDs must increase.
        uids = [found[subject] for subject in subjects]
        assert uids == sorted(uids) and len(set(uids)) == len(uids)


def idle_latencies(smtp_port: int, imap_port: int) -> list[float]:
    """Deliver on one host, time until IDLE on the other reports EXISTS."""
    latencies = []
    with IMAPClient("127.0.0.1", port=imap_port, ssl=False, timeout=30) as watcher:
        watcher.login(ALICE, PASSWORD)
        exists = watcher.select_folder("INBOX")[b"EXISTS"]
        watcher.idle()
        try:
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as sender:
                for n in range(IDLE_ROUNDS):
                    sender.sendmail("carol@remote.test", [ALICE], message(f"idle {n}"))
                    acknowledged = time.monotonic()
                    while True:
                        left = acknowledged + 5 - time.monotonic()
                        assert left > 0, f"IDLE never reported delivery {n}"
                        responses = watcher.idle_check(timeout=left)
                        counts = [r[0] for r in responses if r[1:2] == (b"EXISTS",)]
                        if counts and max(counts) > exists:
                            exists = max(counts)
                            latencies.append(time.monotonic() - acknowledged)
                            break
        finally:
            watcher.idle_done()
    return latencies


async def test_idle_on_one_host_sees_deliveries_on_the_other(cluster: Cluster) -> None:
    host_a, host_b = cluster.hosts
    with trio.fail_after(60):
        latencies = await trio.to_thread.run_sync(
            idle_latencies, host_a.port("smtp"), host_b.port("imap")
        )
    assert len(latencies) == IDLE_ROUNDS
    assert max(latencies) < IDLE_SECONDS, latencies


def pop3_login(port: int) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    client.user(ALICE)
    try:
        client.pass_(PASSWORD)
    except BaseException:
        client.close()
        raise
    return client


def pop3_exclusion(port_a: int, port_b: int) -> None:
    holder = pop3_login(port_a)
    try:
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            pop3_login(port_b)
    finally:
        holder.quit()
    # QUIT released the maildrop: the other host may have it now.
    pop3_login(port_b).quit()


async def test_pop3_session_on_one_host_locks_out_the_other(cluster: Cluster) -> None:
    host_a, host_b = cluster.hosts
    with trio.fail_after(60):
        await trio.to_thread.run_sync(pop3_exclusion, host_a.port("pop3"), host_b.port("pop3"))


def serve_fails(config_file: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mailstack", "--config", str(config_file), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=SOURCE_ROOT,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("mailstack: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


async def test_start_refuses_an_unmigrated_or_unreachable_database(
    pg_schema: str, tmp_path: Path
) -> None:
    """One clear line, no traceback."""

    def serve_on(url: str) -> str:
        config_file = tmp_path / "host.toml"
        config_file.write_text(
            f'data_dir = "{tmp_path}/data"\n[database]\nurl = "{url}"\n'
            'connect_timeout_seconds = 2\n[smtp]\nlisten = ["127.0.0.1:0"]\n',
            encoding="utf-8",
        )
        return serve_fails(config_file)

    # The schema is empty: never migrated.
    assert "mailstack db upgrade" in await trio.to_thread.run_sync(serve_on, pg_schema)
    # Port 9 (discard) on loopback: nothing listens there.
    line = await trio.to_thread.run_sync(serve_on, "postgresql+psycopg://postgres@127.0.0.1:9/x")
    assert "cannot reach the database" in line
    # A server that accepts the connection and never answers (a host
    # dropping packets looks the same): [database] connect_timeout_seconds.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql+psycopg://postgres@127.0.0.1:{silent.getsockname()[1]}/x"
        started = time.monotonic()
        line = await trio.to_thread.run_sync(serve_on, url)
    assert "cannot reach the database" in line and "timeout" in line
    assert time.monotonic() - started < 20


# -- the database restarts while both hosts take mail ---------------------------


@dataclass
class Tally:
    acknowledged: list[str]
    refused: int = 0


def keep_sending(port: int, prefix: str, tally: Tally, until: threading.Event) -> None:
    """Send until ``until`` is set, retrying whatever was not acknowledged."""
    n = 0
    client: smtplib.SMTP | None = None
    while not until.is_set():
        subject = f"{prefix} {n}"
        try:
            if client is None:
                client = smtplib.SMTP("127.0.0.1", port, timeout=30)
            client.sendmail("carol@remote.test", [ALICE], message(subject))
        except (smtplib.SMTPException, OSError):
            # 451 4.3.0 while the database is away, or the connection
            # dropped: not acknowledged, so the client tries again.
            tally.refused += 1
            if client is not None:
                try:
                    client.close()
                except OSError:
                    pass
            client = None
            time.sleep(0.1)
            continue
        tally.acknowledged.append(subject)
        n += 1
    if client is not None:
        client.quit()


def stored_subjects(port: int) -> set[str]:
    """Every subject in the INBOX, asking again while the store is unavailable."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return set(uids_by_subject(port))
        except (imaplib.IMAP4.error, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def pg_ctl(action: str) -> None:
    result = subprocess.run([*PG_CTL, action], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@needs_pg_ctl
async def test_database_restart_loses_no_acknowledged_message(cluster: Cluster) -> None:
    tallies = [Tally([]) for _ in cluster.hosts]
    until = threading.Event()
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            for host, tally in zip(cluster.hosts, tallies, strict=True):
                nursery.start_soon(
                    trio.to_thread.run_sync,
                    keep_sending,
                    host.port("smtp"),
                    host.name,
                    tally,
                    until,
                )
            await trio.sleep(1.0)
            before = sum(len(t.acknowledged) for t in tallies)
            await trio.to_thread.run_sync(pg_ctl, "restart")
            # Both hosts recover on their own: deliveries succeed again.
            while True:
                if sum(len(t.acknowledged) for t in tallies) >= before + 40:
                    break
                await trio.sleep(0.1)
            until.set()
        stored = await trio.to_thread.run_sync(stored_subjects, cluster.hosts[1].port("imap"))
    acknowledged = [subject for t in tallies for subject in t.acknowledged]
    assert before > 0 and len(acknowledged) >= before + 40
    assert set(acknowledged) <= stored, sorted(set(acknowledged) - stored)[:10]


def temporary_errors_while_down(host: Host) -> None:
    """With the database stopped every protocol answers with its temporary error."""
    imap = imaplib.IMAP4("127.0.0.1", host.port("imap"), timeout=30)
    imap.login(ALICE, PASSWORD)  # logged in before the outage
    pg_ctl("stop")
    try:
        with smtplib.SMTP("127.0.0.1", host.port("smtp"), timeout=30) as client:
            client.ehlo()
            client.mail("carol@remote.test")
            code, reply = client.rcpt(ALICE)
            assert (code, reply[:5]) == (451, b"4.3.0"), (code, reply)
        status, data = imap.status("INBOX", "(MESSAGES)")
        assert status == "NO" and b"[UNAVAILABLE]" in data[0], (status, data)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            imaplib.IMAP4("127.0.0.1", host.port("imap"), timeout=30).login(ALICE, PASSWORD)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            pop3_login(host.port("pop3"))
    finally:
        pg_ctl("start")
    imap.logout()


def recovers(host: Host) -> None:
    """Every protocol works again without restarting the host."""
    deadline = time.monotonic() + 30
    while True:
        try:
            send_batch(host.port("smtp"), ["after the outage"])
            pop3_login(host.port("pop3")).quit()
            return
        except (smtplib.SMTPException, poplib.error_proto, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@needs_pg_ctl
async def test_database_outage_gives_temporary_errors_then_recovers(cluster: Cluster) -> None:
    host = cluster.hosts[0]
    with trio.fail_after(120):
        await trio.to_thread.run_sync(temporary_errors_while_down, host)
        await trio.to_thread.run_sync(recovers, host)
        assert "after the outage" in await trio.to_thread.run_sync(
            stored_subjects, cluster.hosts[1].port("imap")
        )
