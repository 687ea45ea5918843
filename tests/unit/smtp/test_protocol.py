from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from mailstack.smtp import replies
from mailstack.smtp.protocol import ProtocolError, SmtpProtocol, State
from tests.unit.smtp.driver import codes, new_driver, settings

EHLO = b"EHLO client.example\r\n"
TX = b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def bytewise(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_greeting() -> None:
    driver = new_driver()
    assert bytes(driver.out) == b"220 mx.example.test ESMTP mailstack ready\r\n"
    assert driver.core.state is State.CONNECTED


def test_ehlo_advertises_extensions_mx() -> None:
    driver = new_driver()
    out = driver.feed(EHLO).decode()
    lines = out.split("\r\n")[:-1]
    assert lines[0] == "250-mx.example.test at your service"
    assert lines[-1].startswith("250 ")
    keywords = {line[4:].split(" ")[0] for line in lines[1:]}
    assert keywords == {
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "STARTTLS",
    }
    assert "250-SIZE 10000\r\n" in out


def test_ehlo_on_submission_offers_auth_only_under_tls() -> None:
    plain = new_driver(submission=True).feed(EHLO)
    assert b"AUTH" not in plain and b"STARTTLS" in plain
    tls = new_driver(submission=True, tls_active=True).feed(EHLO)
    assert b"250 AUTH PLAIN LOGIN\r\n" in tls and b"STARTTLS" not in tls
    loopback = new_driver(submission=True, plaintext_auth_allowed=True).feed(EHLO)
    assert b"AUTH PLAIN LOGIN" in loopback


def test_rfc5321_appendix_d1_transcript(bytewise: bool) -> None:
    driver = new_driver()
    session = (
        b"EHLO bar.com\r\n"
        b"MAIL FROM:<Smith@bar.com>\r\n"
        b"RCPT TO:<Jones@example.test>\r\n"
        b"RCPT TO:<Green@foo.com>\r\n"
        b"RCPT TO:<Brown@example.test>\r\n"
        b"DATA\r\n"
        b"Blah blah blah...\r\n"
        b"...etc. etc. etc.\r\n"
        b".\r\n"
        b"QUIT\r\n"
    )
    out = driver.feed(session, bytewise=bytewise)
    assert codes(out) == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "550 5.7.1",
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "221 2.0.0",
    ]
    (message,) = driver.messages
    assert message.mail.sender == "Smith@bar.com"
    assert [r.address for r in message.recipients] == ["Jones@example.test", "Brown@example.test"]
    assert message.content == b"Blah blah blah...\r\n..etc. etc. etc.\r\n"
    assert driver.closed is not None and driver.core.state is State.CLOSED


def test_pipelined_transaction_replies_in_order(bytewise: bool) -> None:
    driver = new_driver()
    batch = (
        EHLO + b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<unknown@example.test>\r\n"
        b"RCPT TO:<bob@example.test>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n"
        b"hello\r\n.\r\nNOOP\r\nMAIL FROM:<>\r\nRSET\r\nQUIT\r\n"
    )
    out = driver.feed(batch, bytewise=bytewise)
    assert codes(out) == [
        "250",
        "250 2.1.0",
        "550 5.1.1",
        "250 2.1.5",
        "550 5.7.1",
        "354",
        "250 2.0.0",
        "250 2.0.0",
        "250 2.1.0",
        "250 2.0.0",
        "221 2.0.0",
    ]
    assert [m.content for m in driver.messages] == [b"hello\r\n"]


def test_all_recipients_refused_then_data_gets_554() -> None:
    driver = new_driver()
    out = driver.feed(
        EHLO + b"MAIL FROM:<a@r.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\nQUIT\r\n"
    )
    assert codes(out)[-2:] == ["554 5.5.1", "221 2.0.0"]


# Every command in every idle state: (state-setup bytes, command, expected code).
SETUPS = {
    "connected": b"",
    "ready": EHLO,
    "mail": EHLO + b"MAIL FROM:<a@r.example>\r\n",
    "rcpt": EHLO + TX,
}
EXPECTED = {
    "EHLO x.example": ("250", "250", "250", "250"),
    "HELO x.example": ("250", "250", "250", "250"),
    "MAIL FROM:<b@r.example>": ("503 5.5.1", "250 2.1.0", "503 5.5.1", "503 5.5.1"),
    "RCPT TO:<bob@example.test>": ("503 5.5.1", "503 5.5.1", "250 2.1.5", "250 2.1.5"),
    "DATA": ("503 5.5.1", "503 5.5.1", "554 5.5.1", "354"),
    "RSET": ("250 2.0.0",) * 4,
    "NOOP": ("250 2.0.0",) * 4,
    "VRFY alice": ("252 2.5.0",) * 4,
    "HELP": ("214 2.0.0",) * 4,
    "EXPN list": ("502 5.5.1",) * 4,
    "STARTTLS": ("220 2.0.0", "220 2.0.0", "503 5.5.1", "503 5.5.1"),
    "AUTH PLAIN": ("502 5.5.1",) * 4,
    "BOGUS": ("500 5.5.2",) * 4,
    "QUIT": ("221 2.0.0",) * 4,
}


@pytest.mark.parametrize("command", list(EXPECTED))
@pytest.mark.parametrize("state_index", range(4), ids=list(SETUPS))
def test_every_command_in_every_state(command: str, state_index: int) -> None:
    driver = new_driver()
    setup = list(SETUPS.values())[state_index]
    if setup:
        driver.feed(setup)
    out = driver.feed(command.encode() + b"\r\n")
    assert codes(out)[0] == EXPECTED[command][state_index]


@pytest.mark.parametrize("command", ["AUTH PLAIN", "MAIL FROM:<a@example.test>"])
def test_submission_requires_tls_then_auth(command: str) -> None:
    driver = new_driver(submission=True)
    out = driver.feed(EHLO + command.encode() + b"\r\n")
    assert codes(out)[-1] == ("538 5.7.11" if command.startswith("AUTH") else "530 5.7.0")


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_auth_plain_initial_response_then_mail(bytewise: bool) -> None:
    driver = new_driver(submission=True, tls_active=True)
    out = driver.feed(
        EHLO
        + f"AUTH PLAIN {plain('alice', 'secret')}\r\n".encode()
        + b"MAIL FROM:<alice@example.test>\r\n",
        bytewise=bytewise,
    )
    assert codes(out) == ["250", "235 2.7.0", "250 2.1.0"]
    assert driver.core.session.user == "alice"
    # RFC 4954 4: a second AUTH is refused.
    assert codes(driver.feed(b"RSET\r\nAUTH PLAIN\r\n")) == ["250 2.0.0", "503 5.5.1"]


def test_auth_plain_with_continuation_and_failure() -> None:
    driver = new_driver(submission=True, tls_active=True)
    out = driver.feed(EHLO + b"AUTH PLAIN\r\n")
    assert out.endswith(b"334 \r\n")
    assert driver.core.state is State.AUTH
    out = driver.feed(plain("alice", "wrong").encode() + b"\r\n")
    assert codes(out) == ["535 5.7.8"]
    assert driver.core.session.user is None


def test_auth_login_exchange(bytewise: bool) -> None:
    driver = new_driver(submission=True, tls_active=True)
    user = base64.b64encode(b"alice")
    password = base64.b64encode(b"secret")
    out = driver.feed(
        EHLO + b"AUTH LOGIN\r\n" + user + b"\r\n" + password + b"\r\n", bytewise=bytewise
    )
    assert b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0" in out


def test_auth_cancel_malformed_and_unknown_mechanism() -> None:
    driver = new_driver(submission=True, tls_active=True)
    out = driver.feed(EHLO + b"AUTH LOGIN\r\n*\r\nAUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\nNOOP\r\n")
    assert codes(out)[1:] == ["334", "501 5.0.0", "501 5.5.2", "504 5.5.4", "250 2.0.0"]


def test_auth_plaintext_allowed_on_loopback_by_config() -> None:
    driver = new_driver(submission=True, plaintext_auth_allowed=True)
    out = driver.feed(EHLO + f"AUTH PLAIN {plain('alice', 'secret')}\r\n".encode())
    assert codes(out)[-1] == "235 2.7.0"


def test_auth_needs_ehlo_not_helo() -> None:
    driver = new_driver(submission=True, tls_active=True)
    assert codes(driver.feed(b"HELO x.example\r\nAUTH PLAIN\r\n"))[-1] == "503 5.5.1"


def test_starttls_discards_pipelined_plaintext_and_resets() -> None:
    driver = new_driver(submission=True)
    out = driver.feed(
        EHLO + b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<v@example.test>\r\n"
    )
    assert codes(out) == ["250", "220 2.0.0"]
    assert driver.tls_discarded == [
        len(b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@example.test>\r\n")
    ]
    assert driver.core.session.tls and driver.core.session.helo is None
    # The injected MAIL was never run: a fresh MAIL needs EHLO first.
    assert codes(driver.feed(b"MAIL FROM:<a@b.example>\r\n")) == ["503 5.5.1"]
    out = driver.feed(EHLO)
    assert b"STARTTLS" not in out and b"AUTH PLAIN LOGIN" in out
    assert codes(driver.feed(b"STARTTLS\r\n")) == ["503 5.5.1"]


def test_starttls_when_not_available() -> None:
    driver = new_driver(tls_available=False)
    out = driver.feed(EHLO + b"STARTTLS\r\n")
    assert b"STARTTLS" not in out.split(b"\r\n250 ")[0]
    assert codes(out)[-1] == "502 5.5.1"


def test_receive_before_tls_started_is_a_protocol_error() -> None:
    core = SmtpProtocol(settings())
    core.receive_data(EHLO + b"STARTTLS\r\n")
    assert core.next_event() is not None
    with pytest.raises(ProtocolError):
        core.receive_data(b"NOOP\r\n")


def test_unanswered_event_is_a_protocol_error() -> None:
    core = SmtpProtocol(settings())
    core.receive_data(EHLO + b"MAIL FROM:<>\r\n")
    assert core.next_event() is not None
    with pytest.raises(ProtocolError):
        core.next_event()
    with pytest.raises(ProtocolError):
        core.accept()


def test_message_paused_until_adapter_answers() -> None:
    core = SmtpProtocol(settings())
    core.receive_data(EHLO + b"MAIL FROM:<>\r\n")
    core.next_event()
    core.answer(replies.SENDER_OK)
    core.receive_data(b"RCPT TO:<alice@example.test>\r\n")
    core.next_event()
    core.answer(replies.RECIPIENT_OK, targets=(7,))
    core.receive_data(b"DATA\r\nhi\r\n.\r\nNOOP\r\n")
    event = core.next_event()
    assert core.state is State.PAUSED
    assert core.data_to_send().endswith(b"354 end data with <CR><LF>.<CR><LF>\r\n")
    assert event is not None and event.recipients[0].targets == (7,)  # type: ignore[union-attr]
    assert core.data_to_send() == b""  # no 250 before the store said yes
    core.accept()
    assert core.next_event() is None
    assert core.data_to_send() == b"250 2.0.0 message accepted\r\n250 2.0.0 OK\r\n"


def test_rejected_message_clears_transaction() -> None:
    driver = new_driver()
    driver.reject_next = True
    out = driver.feed(EHLO + TX + b"DATA\r\nx\r\n.\r\nRCPT TO:<bob@example.test>\r\n")
    assert codes(out)[-2:] == ["452 4.2.2", "503 5.5.1"]


@pytest.mark.parametrize(
    "vector", [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r"], ids=repr
)
def test_smuggling_gets_one_rejection_and_no_second_message(vector: bytes, bytewise: bool) -> None:
    driver = new_driver()
    smuggled = b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nforged\r\n"
    out = driver.feed(
        EHLO + TX + b"DATA\r\nreal" + vector + smuggled + b".\r\nQUIT\r\n", bytewise=bytewise
    )
    assert codes(out) == ["250", "250 2.1.0", "250 2.1.5", "354", "554 5.6.11", "221 2.0.0"]
    assert driver.messages == []


def test_text_line_too_long_answered_after_data() -> None:
    driver = new_driver()
    out = driver.feed(EHLO + TX + b"DATA\r\n" + b"x" * 5000 + b"\r\n.\r\nNOOP\r\n")
    assert codes(out)[-2:] == ["500 5.5.6", "250 2.0.0"]
    assert driver.messages == []


def test_data_over_size_gets_552() -> None:
    driver = new_driver(max_message_bytes=1000)
    out = driver.feed(
        EHLO + TX + b"DATA\r\n" + b"y" * 500 + b"\r\n" + b"z" * 600 + b"\r\n.\r\nNOOP\r\n"
    )
    assert codes(out)[-2:] == ["552 5.3.4", "250 2.0.0"]


def test_declared_size_over_limit_refused_at_mail() -> None:
    driver = new_driver(max_message_bytes=1000)
    out = driver.feed(
        EHLO + b"MAIL FROM:<a@r.example> SIZE=1001\r\nMAIL FROM:<a@r.example> SIZE=1000\r\n"
    )
    assert codes(out)[1:] == ["552 5.3.4", "250 2.1.0"]


def test_command_line_limit(bytewise: bool) -> None:
    driver = new_driver()
    long_noop = b"NOOP " + b"x" * 600 + b"\r\n"
    huge = b"NOOP " + b"x" * 100_000 + b"\r\n"
    out = driver.feed(EHLO + long_noop + huge + b"NOOP\r\n", bytewise=bytewise)
    assert codes(out)[1:] == ["500 5.5.2", "500 5.5.2", "250 2.0.0"]
    assert len(driver.core._buffer) < 2000


def test_mail_line_may_use_extension_allowance() -> None:
    # RFC 4954 5: AUTH= lengthens MAIL by up to 500 octets on submission.
    driver = new_driver(submission=True, tls_active=True)
    driver.feed(EHLO + f"AUTH PLAIN {plain('alice', 'secret')}\r\n".encode())
    auth_param = b"AUTH=" + b"a" * 480 + b"@example.test"
    line = b"MAIL FROM:<alice@example.test> SIZE=100 BODY=8BITMIME " + auth_param + b"\r\n"
    assert len(line) > 512
    assert codes(driver.feed(line)) == ["250 2.1.0"]
    rcpt = b"RCPT TO:<bob@example.test> " + b"X" * 600 + b"\r\n"
    assert codes(driver.feed(rcpt)) == ["500 5.5.2"]


def test_bare_lf_command_refused() -> None:
    driver = new_driver()
    assert codes(driver.feed(b"EHLO x.example\nNOOP\r\n")) == ["500 5.5.2", "250 2.0.0"]


def test_invalid_utf8_command() -> None:
    driver = new_driver()
    assert codes(driver.feed(b"NOOP \xff\xfe\r\n")) == ["500 5.5.2"]


def test_max_recipients_then_452() -> None:
    driver = new_driver(max_recipients=3)
    rcpts = b"".join(f"RCPT TO:<u{i}@example.test>\r\n".encode() for i in range(5))
    out = driver.feed(EHLO + b"MAIL FROM:<>\r\n" + rcpts)
    assert codes(out)[2:] == ["250 2.1.5"] * 3 + ["452 4.5.3"] * 2


def test_max_errors_then_421_and_close() -> None:
    driver = new_driver(max_errors=3)
    out = driver.feed(b"BAD\r\nBAD\r\nBAD\r\nNOOP\r\n")
    assert codes(out) == ["500 5.5.2", "500 5.5.2", "500 5.5.2", "421 4.7.0"]
    assert driver.closed is not None


def test_max_commands_then_421() -> None:
    driver = new_driver(max_commands=3)
    out = driver.feed(b"NOOP\r\n" * 5)
    assert codes(out) == ["250 2.0.0"] * 3 + ["421 4.7.0"]


def test_timeout_reply() -> None:
    driver = new_driver()
    driver.core.timed_out()
    assert driver.core.data_to_send() == b"421 4.4.2 timeout exceeded, closing connection\r\n"
    assert driver.core.state is State.CLOSED


def test_eof_mid_data_stores_nothing() -> None:
    driver = new_driver()
    driver.feed(EHLO + TX + b"DATA\r\npartial message\r\n")
    driver.feed(b"")
    assert driver.closed is not None and driver.messages == []


def test_bdat_chunks(bytewise: bool) -> None:
    driver = new_driver()
    out = driver.feed(
        EHLO + TX + b"BDAT 5\r\nhel\r\nBDAT 4 LAST\r\nlo\r\n" + b"NOOP\r\n", bytewise=bytewise
    )
    assert codes(out)[3:] == ["250 2.0.0", "250 2.0.0", "250 2.0.0"]
    (message,) = driver.messages
    assert message.content == b"hel\r\nlo\r\n" and message.chunked


def test_bdat_without_transaction_consumes_chunk() -> None:
    driver = new_driver()
    out = driver.feed(EHLO + b"BDAT 6 LAST\r\nNOOP\r\nNOOP\r\n")
    assert codes(out)[1:] == ["503 5.5.1", "250 2.0.0"]


def test_data_after_bdat_refused_and_bdat_over_size() -> None:
    driver = new_driver(max_message_bytes=10)
    out = driver.feed(
        EHLO + TX + b"BDAT 3\r\nabcDATA\r\nBDAT 20 LAST\r\n" + b"x" * 20 + b"NOOP\r\n"
    )
    assert codes(out)[3:] == ["250 2.0.0", "503 5.5.1", "552 5.3.4", "250 2.0.0"]
    assert driver.messages == []


def test_rcpt_non_ascii_needs_smtputf8() -> None:
    driver = new_driver()
    out = driver.feed(EHLO + b"MAIL FROM:<a@r.example>\r\nRCPT TO:<\xc3\xbc@example.test>\r\n")
    assert codes(out)[-1] == "553 5.6.7"
    out = driver.feed(
        b"RSET\r\nMAIL FROM:<a@r.example> SMTPUTF8\r\nRCPT TO:<\xc3\xbc@example.test>\r\n"
    )
    assert codes(out)[-1] == "250 2.1.5"


def test_ehlo_resets_transaction() -> None:
    driver = new_driver()
    out = driver.feed(EHLO + TX + EHLO + b"DATA\r\n")
    assert codes(out)[-1] == "503 5.5.1"


PIECES = st.sampled_from(
    [
        b"EHLO a.example\r\n",
        b"MAIL FROM:<>\r\n",
        b"RCPT TO:<bob@example.test>\r\n",
        b"DATA\r\n",
        b".\r\n",
        b"\r\n",
        b"BDAT 3\r\n",
        b"STARTTLS\r\n",
        b"AUTH PLAIN\r\n",
        b"RSET\r\n",
        b"\n.\n",
    ]
)


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80), PIECES), max_size=30), st.booleans())
def test_any_bytes_give_only_replies(chunks: list[bytes], submission: bool) -> None:
    driver = new_driver(submission=submission, tls_active=submission, max_errors=1000)
    for chunk in chunks:
        driver.feed(chunk)
    driver.feed(b"")
    for line in bytes(driver.out).split(b"\r\n")[:-1]:
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-")


def test_rfc5321_appendix_d4_verify_then_send(bytewise: bool) -> None:
    driver = new_driver()
    session = (
        b"EHLO bar.com\r\n"
        b"VRFY Crispin\r\n"
        b"MAIL FROM:<EAK@bar.com>\r\n"
        b"RCPT TO:<Admin.MRC@example.test>\r\n"
        b"DATA\r\n"
        b"Blah blah blah...\r\n"
        b".\r\n"
        b"QUIT\r\n"
    )
    out = driver.feed(session, bytewise=bytewise)
    # RFC 5321 3.5.3: 252 instead of disclosing whether the user exists.
    assert codes(out) == [
        "250",
        "252 2.5.0",
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "221 2.0.0",
    ]
    assert driver.messages[0].content == b"Blah blah blah...\r\n"


def test_rfc3030_pipelined_bdat_example(bytewise: bool) -> None:
    # RFC 3030 4.3: MAIL, two RCPTs and the chunks in one flight.
    body1 = b"To: Susan@example.test\r\nFrom: Sam@Random.com\r\nSubject: part 1\r\n\r\nHi\r\n"
    body2 = b"More text\r\n"
    batch = (
        b"EHLO Random.com\r\nMAIL FROM:<Sam@Random.com>\r\n"
        b"RCPT TO:<Susan@example.test>\r\nRCPT TO:<Jim@example.test>\r\n"
        + f"BDAT {len(body1)}\r\n".encode()
        + body1
        + f"BDAT {len(body2)} LAST\r\n".encode()
        + body2
        + b"QUIT\r\n"
    )
    driver = new_driver()
    out = driver.feed(batch, bytewise=bytewise)
    assert codes(out) == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "250 2.1.5",
        "250 2.0.0",
        "250 2.0.0",
        "221 2.0.0",
    ]
    assert driver.messages[0].content == body1 + body2
    assert [r.address for r in driver.messages[0].recipients] == [
        "Susan@example.test",
        "Jim@example.test",
    ]
