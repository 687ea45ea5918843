"""The SMTP client core driven with byte transcripts (no sockets)."""

from __future__ import annotations

from mailstack.secret import Secret
from mailstack.smtp.client_protocol import (
    ClientEvent,
    ClientProtocol,
    ClientSettings,
    Closed,
    Envelope,
    StartTls,
    TlsPolicy,
    TransactionDone,
    dot_stuff,
    parse_extensions,
)
from mailstack.smtp.replies import Reply

CONTENT = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
TWO = ("a@remote.test", "b@remote.test")


def client(
    *,
    recipients: tuple[str, ...] = TWO,
    tls: TlsPolicy = TlsPolicy.OPPORTUNISTIC,
    smtputf8: bool = False,
    eight_bit: bool = False,
    username: str = "",
) -> ClientProtocol:
    settings = ClientSettings(
        "mail.example.test", tls=tls, username=username, password=Secret("pw") if username else None
    )
    envelope = Envelope("alice@example.test", recipients, len(CONTENT), smtputf8, eight_bit)
    return ClientProtocol(settings, envelope, CONTENT)


def step(core: ClientProtocol, data: bytes) -> tuple[bytes, list[ClientEvent]]:
    """Feed ``data``; what the core sends and the events it raises."""
    core.receive_data(data)
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
        if isinstance(event, StartTls | Closed):
            break
    return core.data_to_send(), events


def ehlo(*extensions: str) -> bytes:
    lines = ["mx.remote.test", *extensions]
    return "".join(
        f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n" for i, line in enumerate(lines)
    ).encode()


def test_pipelined_transaction_records_before_quit() -> None:
    core = client()
    assert step(core, b"220 mx ESMTP\r\n") == (b"EHLO mail.example.test\r\n", [])
    sent, _ = step(core, ehlo("PIPELINING", "SIZE 1000", "8BITMIME"))
    # RFC 2920: MAIL, every RCPT and DATA in one write.
    assert sent == (
        b"MAIL FROM:<alice@example.test> SIZE=%d\r\n"
        b"RCPT TO:<a@remote.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\n" % len(CONTENT)
    )
    sent, events = step(
        core, b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go\r\n"
    )
    assert sent == b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n"
    assert core.awaiting_data_end and events == []
    sent, events = step(core, b"250 2.0.0 queued as X\r\n")
    assert sent == b"QUIT\r\n"
    [done] = events
    assert isinstance(done, TransactionDone)
    assert done.outcomes["a@remote.test"].delivered
    rejected = done.outcomes["b@remote.test"]
    assert rejected.permanent and rejected.reply == Reply(550, "5.1.1", "no such user")
    assert step(core, b"221 bye\r\n") == (b"", [Closed()])


def test_without_pipelining_one_command_at_a_time() -> None:
    core = client()
    step(core, b"220 mx\r\n")
    assert step(core, ehlo())[0] == b"MAIL FROM:<alice@example.test>\r\n"
    assert step(core, b"250 ok\r\n")[0] == b"RCPT TO:<a@remote.test>\r\n"
    assert step(core, b"450 4.2.1 try later\r\n")[0] == b"RCPT TO:<b@remote.test>\r\n"
    assert step(core, b"250 ok\r\n")[0] == b"DATA\r\n"
    step(core, b"354 go\r\n")
    sent, [done] = step(core, b"451 4.3.0 disk full\r\n")
    assert isinstance(done, TransactionDone) and sent == b"QUIT\r\n"
    assert not done.outcomes["a@remote.test"].permanent
    assert done.outcomes["a@remote.test"].reply.code == 450
    assert done.outcomes["b@remote.test"].reply.code == 451
    assert core.mail_accepted


def test_all_recipients_refused_sends_no_data() -> None:
    core = client(recipients=("a@remote.test",))
    step(core, b"220 mx\r\n")
    step(core, ehlo())
    step(core, b"250 ok\r\n")
    sent, [done] = step(core, b"550 5.1.1 unknown\r\n")
    assert sent == b"QUIT\r\n"
    assert isinstance(done, TransactionDone) and done.outcomes["a@remote.test"].permanent


def test_pipelined_data_accepted_without_recipients_ends_empty() -> None:
    core = client(recipients=("a@remote.test",))
    step(core, b"220 mx\r\n")
    step(core, ehlo("PIPELINING"))
    sent, events = step(core, b"250 ok\r\n550 5.1.1 unknown\r\n354 go\r\n")
    assert sent == b".\r\n" and events == []
    sent, [done] = step(core, b"554 5.5.1 no valid recipients\r\n")
    assert isinstance(done, TransactionDone)
    assert done.outcomes["a@remote.test"].reply.code == 550


def test_starttls_then_ehlo_again() -> None:
    core = client()
    step(core, b"220 mx\r\n")
    sent, events = step(core, ehlo("STARTTLS", "PIPELINING"))
    assert sent == b"STARTTLS\r\n" and events == []
    sent, events = step(core, b"220 2.0.0 ready\r\n")
    assert events == [StartTls()]
    core.tls_started()
    assert core.data_to_send() == b"EHLO mail.example.test\r\n"
    sent, _ = step(core, ehlo("PIPELINING"))
    assert sent.startswith(b"MAIL FROM:")


def test_required_tls_not_offered_is_temporary() -> None:
    core = client(tls=TlsPolicy.REQUIRED)
    step(core, b"220 mx\r\n")
    sent, [done] = step(core, ehlo("PIPELINING"))
    assert sent == b"QUIT\r\n"
    assert isinstance(done, TransactionDone)
    outcome = done.outcomes["a@remote.test"]
    assert outcome.reply.code == 454 and not outcome.from_remote and not outcome.permanent


def test_missing_extensions_refuse_rather_than_corrupt() -> None:
    for kwargs, status in (({"smtputf8": True}, "5.6.7"), ({"eight_bit": True}, "5.6.3")):
        core = client(**kwargs)  # type: ignore[arg-type]
        step(core, b"220 mx\r\n")
        sent, [done] = step(core, ehlo("PIPELINING"))
        assert sent == b"QUIT\r\n"
        assert isinstance(done, TransactionDone)
        outcome = done.outcomes["a@remote.test"]
        assert outcome.permanent and outcome.reply.enhanced == status


def test_extensions_used_when_offered() -> None:
    core = client(smtputf8=True, eight_bit=True)
    step(core, b"220 mx\r\n")
    sent, _ = step(core, ehlo("8BITMIME", "SMTPUTF8"))
    assert sent == b"MAIL FROM:<alice@example.test> BODY=8BITMIME SMTPUTF8\r\n"


def test_size_over_remote_limit_is_permanent() -> None:
    core = client()
    step(core, b"220 mx\r\n")
    _, [done] = step(core, ehlo("SIZE 10"))
    assert isinstance(done, TransactionDone)
    assert done.outcomes["a@remote.test"].reply.enhanced == "5.3.4"


def test_helo_fallback_and_greeting_refusal() -> None:
    core = client()
    step(core, b"220 mx\r\n")
    assert step(core, b"502 5.5.1 no EHLO\r\n")[0] == b"HELO mail.example.test\r\n"
    assert step(core, b"250 hi\r\n")[0] == b"MAIL FROM:<alice@example.test>\r\n"

    refused = client()
    sent, [done] = step(refused, b"554 5.7.1 go away\r\n")
    assert sent == b"QUIT\r\n"
    assert isinstance(done, TransactionDone)
    assert done.outcomes["a@remote.test"].permanent and not refused.mail_accepted


def test_auth_plain_for_a_smarthost() -> None:
    core = client(username="relay-user")
    step(core, b"220 mx\r\n")
    sent, _ = step(core, ehlo("AUTH LOGIN PLAIN"))
    assert sent == b"AUTH PLAIN AHJlbGF5LXVzZXIAcHc=\r\n"
    assert step(core, b"235 2.7.0 ok\r\n")[0] == b"MAIL FROM:<alice@example.test>\r\n"

    refused = client(username="relay-user")
    step(refused, b"220 mx\r\n")
    step(refused, ehlo("AUTH PLAIN"))
    _, [done] = step(refused, b"535 5.7.8 bad credentials\r\n")
    assert isinstance(done, TransactionDone)
    assert not done.outcomes["a@remote.test"].permanent  # our config: keep the mail


def test_connection_lost_and_bad_replies_are_temporary() -> None:
    core = client()
    step(core, b"220 mx\r\n")
    _, events = step(core, b"")
    assert isinstance(events[0], TransactionDone) and events[1] == Closed()
    assert events[0].outcomes["a@remote.test"].reply.code == 451

    garbled = client()
    _, events = step(garbled, b"hello there\r\n")
    assert isinstance(events[0], TransactionDone)
    assert events[0].outcomes["b@remote.test"].reply.enhanced == "4.5.0"


def test_multiline_reply_and_extension_parsing() -> None:
    core = client()
    step(core, b"220-mx first\r\n220 mx second\r\n")
    assert core.last_reply == Reply(220, None, ("mx first", "mx second"))
    reply = Reply(250, None, ("mx", "SIZE 100", "pipelining", "AUTH PLAIN LOGIN"))
    assert parse_extensions(reply) == {"SIZE": "100", "PIPELINING": "", "AUTH": "PLAIN LOGIN"}


def test_dot_stuffing() -> None:
    assert dot_stuff(b".a\r\n.\r\nb") == b"..a\r\n..\r\nb\r\n.\r\n"
