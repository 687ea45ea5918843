"""One fuzz target per parser a remote peer reaches.

Each target takes arbitrary bytes and drives one PURE core the way its trio
adapter would, answering the core's events with a fixed policy (no sockets, no
store).  The invariant (as h11's fuzz/afl-server.py states it): whatever the
bytes, the core answers or raises its own protocol error; any other exception
is a bug.  Targets raise on a bug and return otherwise, so the same function
serves the hypothesis tests in CI (``tests/fuzz``) and the long runs of
``fuzz/run.py`` (atheris or hypothesis).

The first byte of the input chooses how the rest is cut into reads (so
boundaries fall everywhere, as on a real socket) and which settings the core
runs with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from mailstack import mime
from mailstack.auth import sasl
from mailstack.imap.framing import Continue, Framer, Refused
from mailstack.imap.grammar import ParseError, command
from mailstack.imap.mutf7 import Mutf7Error
from mailstack.imap.protocol import SessionState
from mailstack.imap.protocol import Settings as ImapSettings
from mailstack.imap.protocol import State as ImapState
from mailstack.pop3 import protocol as pop3
from mailstack.pop3.maildrop import Maildrop
from mailstack.smtp import protocol as smtp
from mailstack.smtp import replies

MESSAGES = {
    1: b"Subject: one\r\n\r\n.dot\r\nbody\r\n",
    2: b"Subject: two\r\n\r\n" + b"x" * 300 + b"\r\n",
}


def _chunks(data: bytes) -> tuple[int, Iterator[bytes]]:
    """(settings bits, the rest of ``data`` cut into reads)."""
    if not data:
        return 0, iter(())
    control, rest = data[0], data[1:]
    size = (control & 0x0F) or len(rest) or 1
    return control >> 4, (rest[i : i + size] for i in range(0, len(rest), size))


# -- SMTP (mailstack/smtp/protocol.py) -----------------------------------------


def _smtp_answer(core: smtp.SmtpProtocol, event: object, flip: bool) -> None:
    if isinstance(event, smtp.CheckSender):
        core.answer(replies.SENDER_OK)
    elif isinstance(event, smtp.CheckRecipient):
        core.answer(replies.RECIPIENT_OK, targets=(1,))
    elif isinstance(event, smtp.Authenticate):
        if flip:
            core.auth_succeeded(event.credentials.authcid)
        else:
            core.auth_failed()
    elif isinstance(event, smtp.StartTls):
        core.tls_started()
    elif isinstance(event, smtp.MessageReceived):
        if flip:
            core.accept()
        else:
            core.reject(replies.MAILBOX_FULL)


def smtp_core(data: bytes) -> None:
    bits, chunks = _chunks(data)
    core = smtp.SmtpProtocol(
        smtp.Settings(
            hostname="mx.example.test",
            max_message_bytes=4096,
            max_recipients=5,
            max_errors=1000,
            max_commands=10_000,
            submission=bool(bits & 1),
            tls_available=True,
            tls_active=bool(bits & 2),
            plaintext_auth_allowed=bool(bits & 4),
        )
    )
    flip = bool(bits & 8)
    for chunk in [*chunks, b""]:
        core.receive_data(chunk)
        while (event := core.next_event()) is not None:
            if isinstance(event, smtp.CloseConnection):
                _check_smtp_replies(core.data_to_send())
                return
            _smtp_answer(core, event, flip)
            flip = not flip
        _check_smtp_replies(core.data_to_send())


def _check_smtp_replies(out: bytes) -> None:
    for line in out.split(b"\r\n")[:-1]:
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-"), line


# -- IMAP (mailstack/imap/framing.py + grammar.py + protocol.py) -----------------


def imap_core(data: bytes) -> None:
    bits, chunks = _chunks(data)
    framer = Framer(1024, 4096, literal_plus=bool(bits & 1))
    session = SessionState(
        ImapSettings(max_literal_bytes=4096, allow_plaintext_login=True, tls_available=True),
        tls_active=bool(bits & 2),
    )
    session.state = list(ImapState)[bits % len(ImapState)]
    for chunk in chunks:
        framer.feed(chunk)
        while (event := framer.next_event()) is not None:
            if isinstance(event, Continue):
                continue
            if isinstance(event, Refused):
                if event.fatal:
                    return
                continue
            try:
                tagged = command(event, 16)
            except ParseError:
                continue
            session.check_state(tagged.command)
            for name in _mailbox_names(tagged.command):
                try:
                    session.decode_name(name)
                except Mutf7Error:
                    pass


def _mailbox_names(cmd: object) -> list[str]:
    return [
        value
        for attr in ("mailbox", "name", "new_name", "reference", "pattern")
        if isinstance(value := getattr(cmd, attr, None), str)
    ]


# -- POP3 (mailstack/pop3/protocol.py) -------------------------------------------


def pop3_core(data: bytes) -> None:
    bits, chunks = _chunks(data)
    core = pop3.Pop3Protocol(
        pop3.Settings(
            max_line_bytes=256,
            max_commands=10_000,
            allow_plaintext_login=bool(bits & 1),
            tls_available=True,
            tls_active=bool(bits & 2),
        ),
        greeting="ready",
    )
    for chunk in [*chunks, b""]:
        core.receive_data(chunk)
        while (event := core.next_event()) is not None:
            if isinstance(event, pop3.CloseConnection):
                return
            if isinstance(event, pop3.Authenticate):
                if event.credentials.authcid == "alice" or bits & 4:
                    entries = [(uid, len(raw), uid) for uid, raw in MESSAGES.items()]
                    core.authenticated(Maildrop(1, entries))
                else:
                    core.login_failed(pop3.LoginFailure.AUTH)
            elif isinstance(event, pop3.FetchMessage):
                core.message_fetched(MESSAGES.get(event.message.content_id))
            elif isinstance(event, pop3.StartTls):
                core.tls_started()
            elif isinstance(event, pop3.CommitDeletions):
                core.deletions_committed(not bits & 8)
        core.data_to_send()


# -- SASL (mailstack/auth/sasl.py) -----------------------------------------------


def sasl_exchange(data: bytes) -> None:
    """Mechanism name, optional initial response, then client lines, all
    taken from ``data`` split at NUL."""
    parts = [p.decode("utf-8", "replace") for p in data.split(b"\0")]
    mechanism, *lines = parts or [""]
    try:
        exchange = sasl.begin(mechanism, plaintext_allowed=True)
        initial = lines.pop(0) if lines and lines[0] else None
        result = exchange.start(initial)
        for line in lines:
            if isinstance(result, sasl.Credentials):
                break
            result = exchange.respond(line)
    except sasl.SaslError as exc:
        assert exc.reason
        return
    assert isinstance(result, sasl.Challenge | sasl.Credentials)


# -- MIME structure (mailstack/mime.py) --------------------------------------------


def mime_analyze(data: bytes) -> None:
    analysis = mime.analyze(data)
    # What the store keeps must be JSON (the columns are JSON).
    json.dumps([analysis.envelope, analysis.bodystructure, analysis.headers])
    mime.text_content(data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "smtp": smtp_core,
    "imap": imap_core,
    "pop3": pop3_core,
    "sasl": sasl_exchange,
    "mime": mime_analyze,
}
