"""The PURE POP3 core driven with bytes: every command in every state.

Each transcript runs twice, fed whole and one byte at a time, and must give
the same output both ways.  A small in-test "adapter" answers the core's
events from fixed data (a real maildrop, real SASL, no mocks of the core).
"""

from __future__ import annotations

import ast
import base64
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstack.pop3 import protocol
from mailstack.pop3.maildrop import Maildrop, unique_id
from mailstack.pop3.protocol import (
    Authenticate,
    CloseConnection,
    CommitDeletions,
    FetchMessage,
    LoginFailure,
    Pop3Protocol,
    Settings,
    StartTls,
    State,
)

MSG1 = b"Subject: one\r\nFrom: a@example.test\r\n\r\nline 1\r\n.starts with dot\r\nline 3\r\n"
MSG2 = b"Subject: two\r\n\r\n" + b"x" * 100 + b"\r\n"
MSG3 = b"Subject: three\r\n\r\nbody\r\nmore\r\n.\r\nend\r\n"
MESSAGES = {11: MSG1, 12: MSG2, 15: MSG3}  # content_id == uid here
UIDVALIDITY = 1700000000

TLS = Settings(
    max_line_bytes=1024,
    max_commands=1000,
    allow_plaintext_login=False,
    tls_available=True,
    tls_active=True,
)
PLAIN = Settings(
    max_line_bytes=1024,
    max_commands=1000,
    allow_plaintext_login=False,
    tls_available=True,
    tls_active=False,
)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


@dataclass
class Adapter:
    """Answers events like server.py would, from in-memory data."""

    settings: Settings = TLS
    password: str = "secret pw"
    in_use: bool = False
    store_down: bool = False
    commit_ok: bool = True
    gone: set[int] = field(default_factory=set)
    events: list[object] = field(default_factory=list)
    closed: bool = False
    state_before_eof: State = State.AUTHORIZATION

    def run(self, data: bytes, *, bytewise: bool = False) -> bytes:
        core = Pop3Protocol(self.settings, greeting="mailstack ready")
        self.core = core
        out = bytearray(core.data_to_send())
        chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
        for chunk in chunks:
            if self.closed:
                break
            core.receive_data(chunk)
            out += self._drain(core)
        self.state_before_eof = core.state
        if not self.closed:
            core.receive_data(b"")
            out += self._drain(core)
        return bytes(out)

    def _drain(self, core: Pop3Protocol) -> bytes:
        out = bytearray()
        while True:
            event = core.next_event()
            out += core.data_to_send()
            if event is None:
                return bytes(out)
            self.events.append(event)
            if isinstance(event, CloseConnection):
                self.closed = True
                return bytes(out)
            if isinstance(event, Authenticate):
                creds = event.credentials
                if self.store_down:
                    core.login_failed(LoginFailure.SYS_TEMP)
                elif creds.authcid != "alice" or creds.password.reveal() != self.password:
                    core.login_failed(LoginFailure.AUTH)
                elif self.in_use:
                    core.login_failed(LoginFailure.IN_USE)
                else:
                    entries = [(uid, len(raw), uid) for uid, raw in MESSAGES.items()]
                    core.authenticated(Maildrop(UIDVALIDITY, entries))
            elif isinstance(event, FetchMessage):
                uid = event.message.content_id
                core.message_fetched(None if uid in self.gone else MESSAGES[uid])
            elif isinstance(event, StartTls):
                core.tls_started()
            elif isinstance(event, CommitDeletions):
                core.deletions_committed(self.commit_ok)


LOGIN = b"USER alice\r\nPASS secret pw\r\n"
GREETING = b"+OK mailstack ready\r\n"
LOGGED_IN = GREETING + b"+OK send PASS\r\n+OK maildrop has 3 messages (%d octets)\r\n" % sum(
    len(m) for m in MESSAGES.values()
)


def transcript(data: bytes, **adapter_options: object) -> tuple[bytes, Adapter]:
    """Run ``data`` whole and byte by byte; both must answer identically."""
    whole = Adapter(**adapter_options)  # type: ignore[arg-type]
    out = whole.run(data)
    bytewise = Adapter(**adapter_options)  # type: ignore[arg-type]
    assert bytewise.run(data, bytewise=True) == out
    assert bytewise.events == whole.events
    return out, whole


def session(commands: bytes, **adapter_options: object) -> bytes:
    """Log in, run ``commands``; the reply bytes after the login."""
    out, _ = transcript(LOGIN + commands, **adapter_options)
    assert out.startswith(LOGGED_IN)
    return out[len(LOGGED_IN) :]


# -- AUTHORIZATION ---------------------------------------------------------------


def test_greeting_then_quit_closes_without_update() -> None:
    out, adapter = transcript(b"QUIT\r\n")
    assert out == GREETING + b"+OK bye\r\n"
    assert adapter.events == [CloseConnection()]


def test_capa_before_tls_hides_plaintext_login_and_offers_stls() -> None:
    out, _ = transcript(b"CAPA\r\n", settings=PLAIN)
    assert out == GREETING + (
        b"+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
        b"PIPELINING\r\nEXPIRE NEVER\r\nSTLS\r\nIMPLEMENTATION mailstack\r\n.\r\n"
    )


def test_capa_under_tls_offers_user_and_sasl_not_stls() -> None:
    out, _ = transcript(b"capa\r\n")
    lines = out.split(b"\r\n")
    assert b"USER" in lines and b"SASL PLAIN LOGIN" in lines
    assert b"STLS" not in lines


def test_capa_with_plaintext_allowed_offers_user_before_tls() -> None:
    allowed = Settings(
        1024, 1000, allow_plaintext_login=True, tls_available=False, tls_active=False
    )
    out, _ = transcript(b"CAPA\r\n", settings=allowed)
    lines = out.split(b"\r\n")
    assert b"USER" in lines and b"SASL PLAIN LOGIN" in lines and b"STLS" not in lines


def test_capa_in_transaction_lists_no_login_capabilities() -> None:
    out = session(b"CAPA\r\n")
    assert out == (
        b"+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
        b"PIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION mailstack\r\n.\r\n"
    )


def test_capa_rejects_arguments() -> None:
    out, _ = transcript(b"CAPA x\r\n")
    assert out == GREETING + b"-ERR syntax: CAPA takes no arguments\r\n"


def test_user_pass_login() -> None:
    out, adapter = transcript(LOGIN)
    assert out == LOGGED_IN
    assert adapter.state_before_eof is State.TRANSACTION
    (auth, close) = adapter.events
    assert isinstance(auth, Authenticate)
    assert auth.credentials.authcid == "alice"
    assert auth.credentials.password.reveal() == "secret pw"  # spaces kept (RFC 2289 7)
    assert close == CloseConnection()  # EOF after login


def test_user_refused_before_tls() -> None:
    out, adapter = transcript(b"USER alice\r\nPASS secret pw\r\n", settings=PLAIN)
    assert out == GREETING + (
        b"-ERR [AUTH] plaintext login disallowed before STLS\r\n-ERR USER first\r\n"
    )
    assert adapter.events == [CloseConnection()]


def test_wrong_password_and_unknown_user_answer_the_same() -> None:
    wrong, _ = transcript(b"USER alice\r\nPASS nope\r\n")
    unknown, _ = transcript(b"USER mallory\r\nPASS secret pw\r\n")
    assert (
        wrong
        == unknown
        == GREETING + (b"+OK send PASS\r\n-ERR [AUTH] invalid user name or password\r\n")
    )


def test_retry_after_failed_login() -> None:
    out, adapter = transcript(b"USER alice\r\nPASS nope\r\nPASS secret pw\r\n" + LOGIN)
    assert b"-ERR USER first\r\n" in out
    assert out.endswith(b"+OK maildrop has 3 messages (%d octets)\r\n" % 228)
    assert adapter.state_before_eof is State.TRANSACTION


def test_pass_must_follow_user_directly() -> None:
    out, _ = transcript(b"USER alice\r\nCAPA\r\nPASS secret pw\r\n")
    assert out.endswith(b"-ERR USER first\r\n")


def test_user_and_pass_syntax() -> None:
    out, _ = transcript(b"USER\r\nUSER a b\r\nUSER alice\r\nPASS\r\n")
    assert out == GREETING + (
        b"-ERR syntax: USER name\r\n-ERR syntax: USER name\r\n+OK send PASS\r\n"
        b"-ERR syntax: PASS password\r\n"
    )


def test_in_use_and_sys_temp_codes() -> None:
    out, adapter = transcript(LOGIN, in_use=True)
    assert out.endswith(b"-ERR [IN-USE] maildrop already locked by another session\r\n")
    assert adapter.state_before_eof is State.AUTHORIZATION
    out, _ = transcript(LOGIN, store_down=True)
    assert out.endswith(b"-ERR [SYS/TEMP] temporary server failure, try again later\r\n")


def test_auth_plain_initial_response() -> None:
    out, adapter = transcript(b"AUTH PLAIN " + b64(b"\0alice\0secret pw") + b"\r\nSTAT\r\n")
    assert out == GREETING + b"+OK maildrop has 3 messages (228 octets)\r\n+OK 3 228\r\n"
    assert adapter.state_before_eof is State.TRANSACTION


def test_auth_plain_with_challenge_and_empty_initial_response() -> None:
    out, _ = transcript(b"AUTH PLAIN\r\n" + b64(b"\0alice\0secret pw") + b"\r\n")
    assert out == GREETING + b"+ \r\n+OK maildrop has 3 messages (228 octets)\r\n"
    out, _ = transcript(b"AUTH PLAIN =\r\n")
    assert out == GREETING + b"-ERR [AUTH] malformed PLAIN message\r\n"


def test_auth_login_exchange() -> None:
    data = b"AUTH LOGIN\r\n" + b64(b"alice") + b"\r\n" + b64(b"secret pw") + b"\r\n"
    out, _ = transcript(data)
    assert out == GREETING + (
        b"+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK maildrop has 3 messages (228 octets)\r\n"
    )


def test_auth_cancel_bad_base64_wrong_password() -> None:
    out, adapter = transcript(
        b"AUTH LOGIN\r\n*\r\nAUTH PLAIN\r\n!!!\r\nAUTH PLAIN " + b64(b"\0alice\0bad") + b"\r\n"
    )
    assert out == GREETING + (
        b"+ VXNlcm5hbWU6\r\n-ERR authentication cancelled\r\n"
        b"+ \r\n-ERR [AUTH] invalid base64 data\r\n"
        b"-ERR [AUTH] invalid user name or password\r\n"
    )
    assert adapter.state_before_eof is State.AUTHORIZATION


def test_auth_non_ascii_response_fails() -> None:
    out, _ = transcript(b"AUTH PLAIN\r\n\xff\r\nNOOP\r\n")
    assert out == GREETING + (
        b"+ \r\n-ERR [AUTH] invalid base64 data\r\n-ERR command not valid in this state\r\n"
    )


def test_auth_mechanisms_and_refusals() -> None:
    out, _ = transcript(b"AUTH\r\nAUTH CRAM-MD5\r\n")
    assert out == GREETING + (
        b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n-ERR unrecognized authentication mechanism\r\n"
    )
    out, _ = transcript(b"AUTH\r\nAUTH PLAIN\r\n", settings=PLAIN)
    assert out == GREETING + (
        b"+OK\r\n.\r\n-ERR [AUTH] plaintext authentication disallowed before STLS\r\n"
    )


def test_overlong_line_aborts_sasl_exchange() -> None:
    out, _ = transcript(b"AUTH PLAIN\r\n" + b"A" * 2000 + b"\r\nQUIT\r\n")
    assert out == GREETING + (
        b"+ \r\n-ERR authentication aborted\r\n-ERR line too long\r\n+OK bye\r\n"
    )


def test_stls_discards_pipelined_plaintext() -> None:
    # Fed whole: bytes arriving after the handshake would be TLS records,
    # so only what sat in the buffer with STLS is plaintext to discard.
    adapter = Adapter(settings=PLAIN)
    out = adapter.run(b"STLS\r\nUSER alice\r\nPASS secret pw\r\n")
    assert out == GREETING + b"+OK begin TLS negotiation\r\n"
    assert adapter.events == [StartTls(), CloseConnection()]


def test_after_stls_plaintext_login_is_offered() -> None:
    adapter = Adapter(settings=PLAIN)
    core = adapter.core = Pop3Protocol(PLAIN, greeting="x")
    core.receive_data(b"STLS\r\n")
    assert adapter._drain(core).endswith(b"+OK begin TLS negotiation\r\n")
    core.receive_data(b"CAPA\r\nSTLS\r\n" + LOGIN)
    reply = adapter._drain(core)
    assert b"\r\nUSER\r\n" in reply and b"\r\nSTLS\r\n" not in reply
    assert b"-ERR TLS already active\r\n" in reply
    assert reply.endswith(b"+OK maildrop has 3 messages (228 octets)\r\n")


def test_stls_refusals() -> None:
    out, _ = transcript(b"STLS\r\nSTLS now\r\n")
    assert out == GREETING + (
        b"-ERR TLS already active\r\n-ERR syntax: STLS takes no arguments\r\n"
    )
    none = Settings(1024, 1000, allow_plaintext_login=False, tls_available=False, tls_active=False)
    out, _ = transcript(b"STLS\r\n", settings=none)
    assert out == GREETING + b"-ERR TLS not available\r\n"


@pytest.mark.parametrize(
    "command", [b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"NOOP", b"RSET", b"TOP 1 1", b"UIDL"]
)
def test_transaction_commands_refused_in_authorization(command: bytes) -> None:
    out, _ = transcript(command + b"\r\n")
    assert out == GREETING + b"-ERR command not valid in this state\r\n"


@pytest.mark.parametrize("command", [b"USER alice", b"PASS x", b"AUTH PLAIN", b"STLS"])
def test_authorization_commands_refused_in_transaction(command: bytes) -> None:
    assert session(command + b"\r\n") == b"-ERR command not valid in this state\r\n"


def test_unknown_and_apop_commands() -> None:
    out, _ = transcript(b"APOP alice 0123\r\nXYZZY\r\n\r\n")
    assert out == GREETING + b"-ERR unknown command\r\n" * 3
    assert session(b"APOP a b\r\n") == b"-ERR unknown command\r\n"


def test_invalid_utf8_command() -> None:
    out, _ = transcript(b"US\xffER\r\nQUIT\r\n")
    assert out == GREETING + b"-ERR command is not valid UTF-8\r\n+OK bye\r\n"


# -- TRANSACTION ---------------------------------------------------------------------


def test_fixture_sizes() -> None:
    assert sum(len(m) for m in MESSAGES.values()) == 228 and len(MSG1) == 72


def test_stat_list_uidl() -> None:
    out = session(b"STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 3\r\n")
    assert out == (
        b"+OK 3 228\r\n"
        b"+OK 3 messages (228 octets)\r\n1 %d\r\n2 %d\r\n3 %d\r\n.\r\n"
        b"+OK 2 %d\r\n"
        b"+OK unique-id listing follows\r\n1 1700000000.11\r\n2 1700000000.12\r\n"
        b"3 1700000000.15\r\n.\r\n"
        b"+OK 3 1700000000.15\r\n" % (len(MSG1), len(MSG2), len(MSG3), len(MSG2))
    )


@pytest.mark.parametrize("command", [b"LIST", b"UIDL", b"RETR", b"DELE"])
def test_message_number_errors(command: bytes) -> None:
    out = session(command + b" 0\r\n" + command + b" 4\r\n" + command + b" x\r\n")
    name = command.decode()
    assert out == (
        b"-ERR no such message\r\n-ERR no such message\r\n"
        + f"-ERR syntax: {name} needs a message number\r\n".encode()
    )
    out = session(command + b" -1\r\n" + command + b" " + b"1" * 41 + b"\r\n")
    assert out == f"-ERR syntax: {name} needs a message number\r\n".encode() * 2


def test_retr_byte_stuffs_and_sizes_match() -> None:
    out = session(b"RETR 1\r\nRETR 3\r\n")
    assert out == (
        b"+OK %d octets\r\n" % len(MSG1)
        + MSG1.replace(b"\r\n.starts", b"\r\n..starts")
        + b".\r\n"
        + b"+OK %d octets\r\n" % len(MSG3)
        + MSG3.replace(b"\r\n.\r\n", b"\r\n..\r\n")
        + b".\r\n"
    )


def test_top() -> None:
    out = session(b"TOP 1 0\r\nTOP 1 2\r\nTOP 3 100\r\n")
    assert out == (
        b"+OK top of message follows\r\nSubject: one\r\nFrom: a@example.test\r\n\r\n.\r\n"
        b"+OK top of message follows\r\nSubject: one\r\nFrom: a@example.test\r\n\r\n"
        b"line 1\r\n..starts with dot\r\n.\r\n"
        b"+OK top of message follows\r\n" + MSG3.replace(b"\r\n.\r\n", b"\r\n..\r\n") + b".\r\n"
    )


def test_top_syntax() -> None:
    out = session(b"TOP 1\r\nTOP 1 -1\r\nTOP x 1\r\nTOP 9 1\r\n")
    assert out == (
        b"-ERR syntax: TOP message-number lines\r\n" * 2
        + b"-ERR syntax: TOP needs a message number\r\n-ERR no such message\r\n"
    )


def test_dele_marks_and_rset_unmarks() -> None:
    out = session(
        b"DELE 2\r\nDELE 2\r\nRETR 2\r\nLIST 2\r\nSTAT\r\nLIST\r\nUIDL\r\nRSET\r\nSTAT\r\n"
    )
    remaining = len(MSG1) + len(MSG3)
    assert out == (
        b"+OK message 2 deleted\r\n"
        + b"-ERR message 2 already deleted\r\n" * 3
        + b"+OK 2 %d\r\n" % remaining
        + b"+OK 2 messages (%d octets)\r\n1 %d\r\n3 %d\r\n.\r\n" % (remaining, len(MSG1), len(MSG3))
        + b"+OK unique-id listing follows\r\n1 1700000000.11\r\n3 1700000000.15\r\n.\r\n"
        + b"+OK maildrop has 3 messages (228 octets)\r\n+OK 3 228\r\n"
    )


def test_noop_and_argument_errors() -> None:
    out = session(b"NOOP\r\nNOOP x\r\nSTAT x\r\nRSET x\r\n")
    assert out == (
        b"+OK\r\n-ERR syntax: NOOP takes no arguments\r\n-ERR syntax: STAT takes no arguments\r\n"
        b"-ERR syntax: RSET takes no arguments\r\n"
    )


def test_quit_commits_marked_deletions_in_update() -> None:
    out, adapter = transcript(LOGIN + b"DELE 1\r\nDELE 3\r\nQUIT\r\nNOOP\r\n")
    assert out == LOGGED_IN + b"+OK message 1 deleted\r\n+OK message 3 deleted\r\n+OK bye\r\n"
    assert adapter.events[1:] == [CommitDeletions((11, 15)), CloseConnection()]
    assert adapter.state_before_eof is State.CLOSED


def test_quit_reports_failed_update() -> None:
    out = session(b"DELE 1\r\nQUIT\r\n", commit_ok=False)
    assert out == b"+OK message 1 deleted\r\n-ERR [SYS/TEMP] some deleted messages not removed\r\n"


def test_quit_without_deletions_needs_no_update() -> None:
    out, adapter = transcript(LOGIN + b"RETR 2\r\nQUIT\r\n")
    assert out.endswith(b".\r\n+OK bye\r\n")
    assert not any(isinstance(e, CommitDeletions) for e in adapter.events)


def test_dropped_connection_deletes_nothing() -> None:
    _, adapter = transcript(LOGIN + b"DELE 1\r\nDELE 2\r\n")
    assert not any(isinstance(e, CommitDeletions) for e in adapter.events)
    assert adapter.events[-1] == CloseConnection()


def test_message_gone_elsewhere() -> None:
    out = session(b"RETR 3\r\nTOP 3 1\r\nRETR 1\r\nQUIT\r\n", gone={15})
    assert out.startswith(b"-ERR message 3 no longer exists\r\n" * 2 + b"+OK 72 octets\r\n")
    assert out.endswith(b"+OK bye\r\n")


def test_fetch_failure_is_temporary() -> None:
    core = Pop3Protocol(TLS, greeting="x")
    core.receive_data(LOGIN + b"RETR 1\r\nNOOP\r\n")
    assert isinstance(core.next_event(), Authenticate)
    core.authenticated(Maildrop(5, [(12, 10, 12)]))
    assert isinstance(core.next_event(), FetchMessage)
    core.fetch_failed()
    assert core.next_event() is None
    assert core.data_to_send().endswith(b"-ERR [SYS/TEMP] cannot read message 1 now\r\n+OK\r\n")


def test_marked_gone_is_refused_without_fetch() -> None:
    core = Pop3Protocol(TLS, greeting="x")
    core.data_to_send()
    core.receive_data(LOGIN)
    assert isinstance(core.next_event(), Authenticate)
    drop = Maildrop(5, [(12, 10, 12)])
    core.authenticated(drop)
    assert core.maildrop is drop
    drop.mark_gone(12)
    core.receive_data(b"RETR 1\r\n")
    assert core.next_event() is None
    assert core.data_to_send().endswith(b"-ERR message 1 no longer exists\r\n")


# -- limits, pipelining, robustness ---------------------------------------------------


def test_overlong_line_is_refused_and_session_continues() -> None:
    out = session(b"NOOP " + b"x" * 5000 + b"\r\nNOOP\r\n")
    assert out == b"-ERR line too long\r\n+OK\r\n"


def test_max_commands_closes() -> None:
    limited = Settings(1024, 4, allow_plaintext_login=False, tls_available=True, tls_active=True)
    out, adapter = transcript(LOGIN + b"NOOP\r\nNOOP\r\nNOOP\r\n", settings=limited)
    assert out == LOGGED_IN + b"+OK\r\n+OK\r\n-ERR [SYS/PERM] too many commands in one session\r\n"
    assert adapter.events[-1] == CloseConnection()


def test_pipelined_commands_answered_in_order() -> None:
    pipelined = LOGIN + b"STAT\r\nRETR 2\r\nDELE 2\r\nLIST\r\nQUIT\r\n"
    out, adapter = transcript(pipelined)
    assert out == LOGGED_IN + (
        b"+OK 3 228\r\n+OK %d octets\r\n" % len(MSG2)
        + MSG2
        + b".\r\n+OK message 2 deleted\r\n"
        + b"+OK 2 messages (%d octets)\r\n1 %d\r\n3 %d\r\n.\r\n"
        % (len(MSG1) + len(MSG3), len(MSG1), len(MSG3))
        + b"+OK bye\r\n"
    )
    assert CommitDeletions((12,)) in adapter.events


def test_bare_lf_commands_accepted() -> None:
    out, _ = transcript(b"USER alice\nPASS secret pw\nSTAT\n")
    assert out == LOGGED_IN + b"+OK 3 228\r\n"


def test_timed_out() -> None:
    core = Pop3Protocol(TLS, greeting="x")
    core.data_to_send()
    core.timed_out()
    assert core.data_to_send() == b"-ERR [SYS/TEMP] autologout, idle for too long\r\n"
    assert core.next_event() == CloseConnection()


def test_shutting_down_closes_without_update() -> None:
    core = Pop3Protocol(TLS, greeting="x")
    core.data_to_send()
    core.shutting_down()
    assert core.data_to_send() == b"-ERR [SYS/TEMP] server shutting down, try again later\r\n"
    assert core.next_event() == CloseConnection()


def test_answer_without_pending_event_is_an_adapter_bug() -> None:
    core = Pop3Protocol(TLS, greeting="x")
    with pytest.raises(RuntimeError):
        core.message_fetched(b"")
    core.receive_data(LOGIN)
    assert isinstance(core.next_event(), Authenticate)
    assert core.next_event() is not None  # still pending, not re-parsed
    with pytest.raises(RuntimeError):
        core.tls_started()


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        (b".leading dot\r\n", b"..leading dot\r\n.\r\n"),
        (b"no final newline", b"no final newline\r\n.\r\n"),
        (b"bare\nlf\n.dot\n", b"bare\r\nlf\r\n..dot\r\n.\r\n"),
        (b"", b".\r\n"),
    ],
)
def test_stuffing_edge_cases(raw: bytes, sent: bytes) -> None:
    assert protocol._stuffed(raw) == sent


def test_top_of_bare_lf_and_header_only_messages() -> None:
    assert protocol._top(b"A: 1\n\nx\ny\n", 1) == b"A: 1\n\nx\n"
    assert protocol._top(b"A: 1\r\n", 3) == b"A: 1\r\n"


def test_unique_ids_are_stable_and_valid() -> None:
    first = Maildrop(42, [(1, 10, 1), (9, 20, 2)])
    second = Maildrop(42, [(9, 20, 2)])
    assert first.get(2).unique_id == second.get(1).unique_id == unique_id(42, 9)
    first.delete(1)
    assert first.uids() == [1, 9]  # the whole snapshot, marked or not
    for message in first.live():
        assert 1 <= len(message.unique_id) <= 70
        assert all(0x21 <= ord(c) <= 0x7E for c in message.unique_id)


def test_core_modules_are_pure() -> None:
    for name in ("protocol.py", "maildrop.py"):
        tree = ast.parse((Path(protocol.__file__).parent / name).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & {"trio", "sqlalchemy", "socket"}, name


COMMAND_WORDS = [
    b"USER alice", b"PASS secret pw", b"AUTH PLAIN", b"AUTH LOGIN", b"STLS", b"CAPA",
    b"QUIT", b"STAT", b"LIST", b"LIST 1", b"RETR 1", b"RETR 3", b"DELE 2", b"NOOP",
    b"RSET", b"TOP 1 1", b"UIDL", b"UIDL 2", b"*", b"AUTH", b"\xff", b"",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(COMMAND_WORDS), st.binary(max_size=60)),
        max_size=25,
    ),
    st.lists(st.integers(min_value=1, max_value=17), min_size=1, max_size=10),
    st.sampled_from([TLS, PLAIN]),
)
def test_any_input_gets_replies_never_exceptions(
    lines: list[bytes], splits: list[int], chosen: Settings
) -> None:
    data = b"\r\n".join(lines) + b"\r\n"
    adapter = Adapter(settings=chosen)
    core = Pop3Protocol(chosen, greeting="ready")
    adapter.core = core
    out = bytearray(core.data_to_send())
    position = 0
    index = 0
    while position < len(data) and not adapter.closed:
        size = splits[index % len(splits)]
        core.receive_data(data[position : position + size])
        out += adapter._drain(core)
        position += size
        index += 1
    if not adapter.closed:
        core.receive_data(b"")
        out += adapter._drain(core)
    assert adapter.closed
    assert out.endswith(b"\r\n")
    # The output is always whole lines; replies from the core, never a traceback.
    assert not out.startswith(b"Traceback")


def test_read_ahead_batches_by_count_and_bytes() -> None:
    drop = Maildrop(1, [(uid, 100 * uid, uid) for uid in range(1, 9)])
    drop.delete(3)
    drop.mark_gone(4)
    first = drop.get(1)
    assert [m.uid for m in drop.read_ahead(first, 4, 10_000)] == [1, 2, 5, 6]
    assert [m.uid for m in drop.read_ahead(first, 10, 800)] == [1, 2, 5]
    big = drop.get(8)
    assert drop.read_ahead(big, 10, 1) == [big]  # the asked-for message always


def test_bad_commands_limit_closes_without_update() -> None:
    limited = Settings(
        max_line_bytes=1024,
        max_commands=1000,
        allow_plaintext_login=False,
        tls_available=True,
        tls_active=True,
        max_bad_commands=2,
    )
    out, adapter = transcript(LOGIN + b"DELE 1\r\nXYZZY\r\nUSER x\r\nSTAT\r\n", settings=limited)
    assert out.endswith(
        b"-ERR unknown command\r\n-ERR command not valid in this state\r\n"
        b"-ERR [SYS/PERM] too many bad commands\r\n"
    )
    assert not any(isinstance(e, CommitDeletions) for e in adapter.events)
