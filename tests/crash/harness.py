"""Crash-consistency harness: a real ``mailstack serve`` killed with SIGKILL.

One campaign = ``kills`` cycles of: start the server (SQLite, ports 127.0.0.1:0,
read back from its "listening:" lines), let several client threads deliver
over SMTP, APPEND/STORE/EXPUNGE over IMAP and DELE/QUIT over POP3 while every
acknowledgement goes into a :class:`Ledger`, SIGKILL the server after a random
delay, then check the database file against the ledger (:func:`verify`).

The seed fixes every random choice (kill delays, operations, message sizes);
thread scheduling still varies from run to run, so a failure names the seed
and cycle, and rerunning with that seed replays the same workload.

What "consistent" means (DESIGN.md: acknowledged means durable):

- a message that got 250 (SMTP) or APPEND OK is present exactly once, byte
  for byte, unless a client asked to delete it afterwards;
- a message whose deletion was acknowledged (EXPUNGE OK after STORE \\Deleted,
  POP3 QUIT +OK after DELE) is gone;
- no message exists twice, and nothing exists that no client sent;
- no UID is handed out twice in a mailbox (change log and every UID a client
  ever saw), and uidnext is above every UID used;
- each mailbox's messages are exactly what its change log says (new minus
  expunged), modseqs are within highestmodseq, and each account's usage
  counters equal the sum of its messages;
- SQLite's ``PRAGMA integrity_check`` and ``foreign_key_check`` pass.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import poplib
import random
import re
import select
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

DOMAIN = "crash.test"
ACCOUNTS = {f"user{i}@{DOMAIN}": f"password-{i}" for i in range(3)}
MAILBOXES = ("INBOX", "Archive")
TOKEN_HEADER = b"X-Crash-Token"
_TOKEN = re.compile(rb"X-Crash-Token: ([0-9a-z-]+)\r\n")
_APPENDUID = re.compile(rb"APPENDUID (\d+) (\d+)")
# Clients give up on a silent server after this long (the server is SIGKILLed,
# so sockets normally fail at once with a reset).
CLIENT_TIMEOUT = 10.0
START_TIMEOUT = 30.0
# Share of the kills that hit the server while it starts up, before it listens.
EARLY_KILLS = 0.15

CONFIG = """\
hostname = "crash.test"
data_dir = "{data_dir}"

[auth]
# argon2id at its cheapest: the workers log in hundreds of times.
argon2_time_cost = 1
argon2_memory_kib = 1024
argon2_parallelism = 1
free_failures = 1000
lockout_failures = 0

[smtp]
listen = ["127.0.0.1:0"]

[imap]
listen = ["127.0.0.1:0"]
allow_plaintext_login = true

[pop3]
listen = ["127.0.0.1:0"]
allow_plaintext_login = true

[service]
shutdown_grace_seconds = 1.0

[database]
writer_process = {writer_process}

[logging]
level = "warning"
"""


# -- the ledger: what clients were told ------------------------------------------


@dataclass
class Ledger:
    """Every message sent and every acknowledgement received, per copy.

    A copy is (token, account): one SMTP message to two accounts is two copies.
    """

    sent: dict[tuple[str, str], tuple[str, bytes, str]] = field(default_factory=dict)
    acked: set[tuple[str, str]] = field(default_factory=set)
    deleting: set[tuple[str, str]] = field(default_factory=set)  # deletion asked for
    deleted: set[tuple[str, str]] = field(default_factory=set)  # deletion acknowledged
    # (account, mailbox, uid) -> token: every UID a client has seen.
    uids: dict[tuple[str, str, int], str] = field(default_factory=dict)
    uid_conflicts: list[str] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sending(self, token: str, account: str, mailbox: str, data: bytes, via: str) -> None:
        with self.lock:
            self.sent[(token, account)] = (mailbox, data, via)

    def ack(self, token: str, account: str) -> None:
        with self.lock:
            self.acked.add((token, account))

    def deletion_asked(self, token: str, account: str) -> None:
        with self.lock:
            self.deleting.add((token, account))

    def deletion_acked(self, token: str, account: str) -> None:
        with self.lock:
            self.deleted.add((token, account))

    def saw_uid(self, account: str, mailbox: str, uid: int, token: str) -> None:
        with self.lock:
            key = (account, mailbox, uid)
            before = self.uids.setdefault(key, token)
            if before != token:
                self.uid_conflicts.append(f"{account} {mailbox} UID {uid}: {before} then {token}")

    def refused(self, what: str) -> None:
        with self.lock:
            self.refusals[what] += 1


def message(rng: random.Random, token: str, sender: str, recipient: str) -> bytes:
    """A message with CRLF line ends (so no client rewrites it), a body of
    random size, and lines that need SMTP dot-stuffing."""
    lines = [
        f"From: <{sender}>",
        f"To: <{recipient}>",
        f"Subject: crash test {token}",
        f"Message-ID: <{token}@{DOMAIN}>",
        f"{TOKEN_HEADER.decode()}: {token}",
        "",
    ]
    for _ in range(rng.randrange(1, 200)):
        width = rng.randrange(0, 120)
        line = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz .", k=width))
        lines.append("." + line if rng.random() < 0.05 else line)
    return ("\r\n".join(lines) + "\r\n").encode()


# -- the server process -----------------------------------------------------------


class Server:
    """``mailstack serve`` in its own process; ports read from its stdout."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, stdin: str = "") -> None:
        subprocess.run(
            [sys.executable, "-m", "mailstack", "--config", str(self.config_path), *args],
            input=stdin.encode(),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailstack", "--config", str(self.config_path), "serve"],
                stdout=subprocess.PIPE,
                stderr=log,
                # Its own process group: the server and its writer process.
                start_new_session=True,
            )

    def start(self) -> None:
        """Spawn and wait until every listener is bound."""
        self.spawn()
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        pending = b""
        self.ports = {}
        while len(self.ports) < 3:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(left, 0))
            if not ready:
                self.kill()
                raise RuntimeError(f"server did not start within {START_TIMEOUT} s")
            chunk = os.read(self.process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"server exited at start: see {self.log_path}")
            pending += chunk
            for match in re.finditer(rb"listening: (\w+) tcp://127\.0\.0\.1:(\d+)", pending):
                self.ports[match[1].decode()] = int(match[2])

    def kill(self, *, group: bool = False) -> None:
        """SIGKILL the server; with ``group`` its writer process at the same
        instant too (as a power cut or an OOM kill of the unit would).
        Without, an orphaned writer process finishes its batch and exits on
        its own; either way no process of this server outlives the call."""
        if self.process is not None and self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        if self.process is not None:
            _wait_for_group_exit(self.process.pid)
            if self.process.stdout is not None:
                self.process.stdout.close()
        self.process = None


def _wait_for_group_exit(pgid: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    os.killpg(pgid, signal.SIGKILL)
    raise RuntimeError(f"process group {pgid} was still running {seconds} s after the kill")


# -- client workers: run until the server dies or the cycle ends ------------------


@dataclass
class Worker:
    name: str
    rng: random.Random
    ledger: Ledger
    ports: dict[str, int]
    stop: threading.Event
    tokens: Iterator[str]
    operations: int = 0

    def run(self, body: Callable[[], None]) -> None:
        # A killed server shows up as any of these; the ledger already holds
        # what was acknowledged before it.
        with contextlib.suppress(
            OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto
        ):
            body()


def smtp_worker(w: Worker) -> None:
    accounts = list(ACCOUNTS)
    with smtplib.SMTP("127.0.0.1", w.ports["smtp"], timeout=CLIENT_TIMEOUT) as client:
        client.ehlo("crash-client.test")
        while not w.stop.is_set():
            token = next(w.tokens)
            recipients = w.rng.sample(accounts, w.rng.choice((1, 1, 1, 2)))
            data = message(w.rng, token, "sender@elsewhere.test", recipients[0])
            for account in recipients:
                w.ledger.sending(token, account, "INBOX", data, "smtp")
            try:
                refused = client.sendmail("sender@elsewhere.test", recipients, data)
            except smtplib.SMTPDataError as exc:
                w.ledger.refused(f"smtp {exc.smtp_code}")
                continue
            for account in recipients:
                if account not in refused:
                    w.ledger.ack(token, account)
            w.operations += 1


def _imap_tokens(client: imaplib.IMAP4, w: Worker, account: str, mailbox: str) -> dict[int, str]:
    """UID -> token of every message in the selected mailbox."""
    typ, data = client.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (X-Crash-Token)])")
    found: dict[int, str] = {}
    if typ != "OK":
        return found
    for item in data:
        if not isinstance(item, tuple):
            continue
        uid_match = re.search(rb"UID (\d+)", item[0])
        token_match = _TOKEN.search(item[1])
        if uid_match and token_match:
            uid, token = int(uid_match[1]), token_match[1].decode()
            found[uid] = token
            w.ledger.saw_uid(account, mailbox, uid, token)
    return found


def imap_worker(w: Worker, account: str) -> None:
    with imaplib.IMAP4("127.0.0.1", w.ports["imap"], timeout=CLIENT_TIMEOUT) as client:
        client.login(account, ACCOUNTS[account])
        client.create("Archive")  # NO when it exists already: fine
        while not w.stop.is_set():
            mailbox = w.rng.choice(MAILBOXES)
            action = w.rng.choices(("append", "delete", "flag"), (5, 3, 2))[0]
            if action == "append":
                token = next(w.tokens)
                data = message(w.rng, token, account, account)
                w.ledger.sending(token, account, mailbox, data, "imap")
                typ, response = client.append(mailbox, "", None, data)
                if typ != "OK":
                    w.ledger.refused(f"imap append {typ}")
                    continue
                w.ledger.ack(token, account)
                uid_match = _APPENDUID.search(response[-1] or b"")
                if uid_match:
                    w.ledger.saw_uid(account, mailbox, int(uid_match[2]), token)
            else:
                typ, exists = client.select(mailbox)
                if typ != "OK" or exists[0] == b"0":
                    continue
                found = _imap_tokens(client, w, account, mailbox)
                if not found:
                    continue
                uid = w.rng.choice(sorted(found))
                if action == "flag":
                    client.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)")
                else:
                    w.ledger.deletion_asked(found[uid], account)
                    typ, _ = client.uid("STORE", str(uid), "+FLAGS", "(\\Deleted)")
                    if typ == "OK" and client.expunge()[0] == "OK":
                        w.ledger.deletion_acked(found[uid], account)
                client.close()
            w.operations += 1


def pop3_worker(w: Worker, account: str) -> None:
    while not w.stop.is_set():
        client = poplib.POP3("127.0.0.1", w.ports["pop3"], timeout=CLIENT_TIMEOUT)
        try:
            client.user(account)
            client.pass_(ACCOUNTS[account])
        except poplib.error_proto:
            # Another POP3 session holds the maildrop (RFC 1939 8 lock).
            client.close()
            time.sleep(0.05)
            continue
        count = len(client.list()[1])
        chosen = w.rng.sample(range(1, count + 1), min(count, w.rng.randrange(1, 4)))
        tokens = []
        for number in chosen:
            header = b"\r\n".join(client.top(number, 0)[1]) + b"\r\n"
            token_match = _TOKEN.search(header)
            if token_match is None:
                continue
            token = token_match[1].decode()
            w.ledger.deletion_asked(token, account)
            client.dele(number)
            tokens.append(token)
        client.quit()  # raises unless +OK: the deletions are committed
        for token in tokens:
            w.ledger.deletion_acked(token, account)
        w.operations += 1


# -- checking the database against the ledger -------------------------------------


@dataclass
class Verdict:
    problems: list[str]
    acked_verified: int  # acknowledged copies found exactly once, byte for byte
    deletions_verified: int  # acknowledged deletions found gone
    messages: int


def verify(db_path: Path, ledger: Ledger) -> Verdict:
    problems: list[str] = list(ledger.uid_conflicts)
    db = sqlite3.connect(db_path)
    try:
        problems += _check_sqlite(db)
        copies, rows = _stored_copies(db)
        problems += _check_ledger(ledger, copies)
        problems += _check_uids(db, ledger)
        problems += _check_counters(db)
    finally:
        db.close()
    acked_verified = sum(
        1 for key in ledger.acked if key not in ledger.deleting and len(copies.get(key, ())) == 1
    )
    deletions_verified = sum(1 for key in ledger.deleted if not copies.get(key))
    return Verdict(problems, acked_verified, deletions_verified, rows)


def _check_sqlite(db: sqlite3.Connection) -> list[str]:
    problems = []
    result = [row[0] for row in db.execute("PRAGMA integrity_check")]
    if result != ["ok"]:
        problems.append(f"integrity_check: {result[:5]}")
    broken = db.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        problems.append(f"foreign_key_check: {broken[:5]}")
    return problems


def _stored_copies(
    db: sqlite3.Connection,
) -> tuple[dict[tuple[str, str], list[tuple[str, int, bytes]]], int]:
    copies: dict[tuple[str, str], list[tuple[str, int, bytes]]] = defaultdict(list)
    rows = db.execute(
        "SELECT a.address, b.name, m.uid, m.size, c.data FROM messages m"
        " JOIN mailboxes b ON b.id = m.mailbox_id JOIN accounts a ON a.id = b.account_id"
        " JOIN message_contents c ON c.id = m.content_id"
    ).fetchall()
    for account, mailbox, uid, size, data in rows:
        match = _TOKEN.search(data)
        token = match[1].decode() if match else f"<no token, {account} {mailbox} UID {uid}>"
        if size != len(data):
            copies[("size", token)].append((f"size {size} != {len(data)}", uid, data))
        copies[(token, account)].append((mailbox, uid, data))
    return copies, len(rows)


def _check_ledger(
    ledger: Ledger, copies: dict[tuple[str, str], list[tuple[str, int, bytes]]]
) -> list[str]:
    problems = []
    for key, found in copies.items():
        if key[0] == "size":
            problems.append(f"{key[1]}: {found[0][0]}")
        elif key not in ledger.sent:
            problems.append(f"message nobody sent: {key}")
        elif len(found) > 1:
            problems.append(f"{key} stored {len(found)} times: {[(m, u) for m, u, _ in found]}")
        elif key in ledger.deleted:
            problems.append(f"{key} deleted with acknowledgement but present: {found[0][:2]}")
    for key in ledger.acked - ledger.deleting:
        found = copies.get(key, [])
        if len(found) != 1:
            problems.append(f"acknowledged {key} present {len(found)} times")
            continue
        mailbox, data, via = ledger.sent[key]
        stored_mailbox, _uid, stored = found[0]
        if stored_mailbox != mailbox:
            problems.append(f"acknowledged {key} in {stored_mailbox}, not {mailbox}")
        # SMTP prepends its trace fields (Return-Path, Received); APPEND stores
        # the literal as given.
        exact = stored == data if via == "imap" else stored.endswith(b"\r\n" + data)
        if not exact:
            problems.append(f"acknowledged {key} ({via}) changed: {len(stored)} bytes stored")
    return problems


def _check_uids(db: sqlite3.Connection, ledger: Ledger) -> list[str]:
    problems = []
    reused = db.execute(
        "SELECT mailbox_id, uid, COUNT(*) FROM change_log WHERE kind = 'message.new'"
        " GROUP BY mailbox_id, uid HAVING COUNT(*) > 1"
    ).fetchall()
    problems += [f"UID {uid} created {n} times in mailbox {mb}" for mb, uid, n in reused]
    names = {
        (address, name): (mailbox_id, uidnext)
        for mailbox_id, address, name, uidnext in db.execute(
            "SELECT b.id, a.address, b.name, b.uidnext FROM mailboxes b"
            " JOIN accounts a ON a.id = b.account_id"
        )
    }
    for (account, mailbox, uid), _token in ledger.uids.items():
        if (account, mailbox) in names and uid >= names[(account, mailbox)][1]:
            problems.append(f"{account} {mailbox}: UID {uid} seen but uidnext is lower")
    return problems


def _check_counters(db: sqlite3.Connection) -> list[str]:
    problems = []
    for mailbox_id, uidnext, highest in db.execute(
        "SELECT id, uidnext, highestmodseq FROM mailboxes"
    ).fetchall():
        stored = {
            uid: modseq
            for uid, modseq in db.execute(
                "SELECT uid, modseq FROM messages WHERE mailbox_id = ?", (mailbox_id,)
            )
        }
        logged: set[int] = set()
        max_uid = max_modseq = 0
        for kind, uid, modseq in db.execute(
            "SELECT kind, uid, modseq FROM change_log WHERE mailbox_id = ? ORDER BY id",
            (mailbox_id,),
        ):
            max_modseq = max(max_modseq, modseq)
            if kind == "message.new":
                logged.add(uid)
                max_uid = max(max_uid, uid)
            elif kind == "message.expunged":
                logged.discard(uid)
        if logged != set(stored):
            problems.append(
                f"mailbox {mailbox_id}: change log says UIDs {sorted(logged - set(stored))[:5]}"
                f" exist and {sorted(set(stored) - logged)[:5]} do not"
            )
        if max_uid >= uidnext:
            problems.append(f"mailbox {mailbox_id}: UID {max_uid} logged, uidnext {uidnext}")
        if max(stored.values(), default=0) > highest or max_modseq > highest:
            problems.append(f"mailbox {mailbox_id}: modseq above highestmodseq {highest}")
    for address, used_bytes, used_messages, real_bytes, real_messages in db.execute(
        "SELECT a.address, a.used_bytes, a.used_messages,"
        " COALESCE(SUM(m.size), 0), COUNT(m.id) FROM accounts a"
        " LEFT JOIN mailboxes b ON b.account_id = a.id"
        " LEFT JOIN messages m ON m.mailbox_id = b.id GROUP BY a.id"
    ):
        if (used_bytes, used_messages) != (real_bytes, real_messages):
            problems.append(
                f"{address}: usage says {used_messages} messages / {used_bytes} bytes,"
                f" mailboxes hold {real_messages} / {real_bytes}"
            )
    return problems


# -- the campaign ------------------------------------------------------------------

_USERS = list(ACCOUNTS)
# Two SMTP senders, three IMAP sessions (two on one account), two POP3
# sessions; user0 is reached by all three protocols at once.
PLAN: list[tuple[str, Callable[[Worker], None]]] = [
    ("smtp-a", smtp_worker),
    ("smtp-b", smtp_worker),
    ("imap-0", lambda w: imap_worker(w, _USERS[0])),
    ("imap-1", lambda w: imap_worker(w, _USERS[1])),
    ("imap-0b", lambda w: imap_worker(w, _USERS[0])),
    ("pop3-0", lambda w: pop3_worker(w, _USERS[0])),
    ("pop3-2", lambda w: pop3_worker(w, _USERS[2])),
]


@dataclass
class Report:
    seed: int
    kills: int
    early_kills: int  # of those, during start-up
    acked: int
    acked_verified: int
    deletions_verified: int
    operations: int
    messages_in_store: int
    refusals: dict[str, int]
    problems: list[str]
    seconds: float

    def summary(self) -> str:
        return (
            f"crash harness seed={self.seed}: {self.kills} SIGKILLs ({self.early_kills} during"
            f" start-up), {self.operations} client"
            f" operations, {self.acked} acknowledged copies ({self.acked_verified} verified"
            f" byte for byte), {self.deletions_verified} acknowledged deletions verified,"
            f" {self.messages_in_store} messages in the store, refusals {self.refusals},"
            f" {len(self.problems)} problems, {self.seconds:.1f} s"
        )


def setup(workdir: Path, *, writer_process: bool = False) -> Server:
    data_dir = workdir / "data"
    config_path = workdir / "mailstack.toml"
    config_path.write_text(
        CONFIG.format(data_dir=data_dir, writer_process=str(writer_process).lower())
    )
    server = Server(config_path, workdir / "server.log")
    server.cli("db", "upgrade")
    server.cli("domain", "add", DOMAIN)
    for address, password in ACCOUNTS.items():
        server.cli("user", "add", address, stdin=password + "\n")
    return server


def run_campaign(
    workdir: Path,
    *,
    seed: int,
    kills: int,
    min_run: float = 0.2,
    max_run: float = 1.2,
    writer_process: bool = False,
    log: Callable[[str], None] = lambda text: None,
) -> Report:
    """``kills`` cycles of start, load, SIGKILL, verify; stops at the first problem.

    With ``writer_process`` (``[database] writer_process``) half the kills
    take the server's whole process group, half only the server."""
    started = time.monotonic()
    rng = random.Random(seed)
    server = setup(workdir, writer_process=writer_process)
    ledger = Ledger()
    token_counter = iter(range(10**9))
    token_lock = threading.Lock()

    def tokens() -> Iterator[str]:
        while True:
            with token_lock:
                number = next(token_counter)
            yield f"s{seed}-{number}"

    operations = early_kills = 0
    verdict = Verdict([], 0, 0, 0)
    cycle = 0
    for cycle in range(1, kills + 1):
        if rng.random() < EARLY_KILLS:
            # Killed while starting up (opening and recovering the database).
            server.spawn()
            time.sleep(rng.uniform(0.0, 0.6))
            server.kill()
            early_kills += 1
            verdict = verify(workdir / "data" / "mailstack.db", ledger)
            log(f"cycle {cycle}: killed during start-up, {len(verdict.problems)} problems")
            if verdict.problems:
                break
            continue
        started_at = time.monotonic()
        server.start()
        start_seconds = time.monotonic() - started_at
        stop = threading.Event()
        workers: list[tuple[Worker, Callable[[], None]]] = []
        for name, body in PLAN:
            worker = Worker(name, random.Random(rng.random()), ledger, server.ports, stop, tokens())
            workers.append((worker, lambda w=worker, b=body: w.run(lambda: b(w))))
        threads = [threading.Thread(target=run, name=w.name) for w, run in workers]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(min_run, max_run))
        server.kill(group=writer_process and rng.random() < 0.5)
        stop.set()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT * 2)
        operations += sum(w.operations for w, _ in workers)
        verdict = verify(workdir / "data" / "mailstack.db", ledger)
        log(
            f"cycle {cycle}: {operations} operations, {len(ledger.acked)} acknowledged,"
            f" {verdict.messages} stored, {len(verdict.problems)} problems"
            f" (server ready after {start_seconds:.2f} s)"
        )
        if verdict.problems:
            break
    # A last start on the recovered database: it must come up and stay consistent.
    if not verdict.problems:
        server.start()
        server.kill()
        verdict = verify(workdir / "data" / "mailstack.db", ledger)
    return Report(
        seed=seed,
        kills=cycle,
        early_kills=early_kills,
        acked=len(ledger.acked),
        acked_verified=verdict.acked_verified,
        deletions_verified=verdict.deletions_verified,
        operations=operations,
        messages_in_store=verdict.messages,
        refusals=dict(ledger.refusals),
        problems=verdict.problems,
        seconds=time.monotonic() - started,
    )
