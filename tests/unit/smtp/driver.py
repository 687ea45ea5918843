"""A test driver for the SMTP core: feeds bytes, answers events with a fixed policy.

The policy stands in for the adapter's decisions (store lookups, password
checks), so tests see exactly what the core does with the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailstack.smtp import replies
from mailstack.smtp.protocol import (
    Authenticate,
    CheckRecipient,
    CheckSender,
    CloseConnection,
    MessageReceived,
    Settings,
    SmtpProtocol,
    StartTls,
)

LOCAL_DOMAIN = "example.test"


def settings(**changes: object) -> Settings:
    values: dict[str, object] = {
        "hostname": "mx.example.test",
        "max_message_bytes": 10_000,
        "max_recipients": 5,
        "max_errors": 10,
        "max_commands": 1000,
        "submission": False,
        "tls_available": True,
        "tls_active": False,
        "plaintext_auth_allowed": False,
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class Driver:
    core: SmtpProtocol
    messages: list[MessageReceived] = field(default_factory=list)
    tls_discarded: list[int] = field(default_factory=list)
    closed: CloseConnection | None = None
    out: bytearray = field(default_factory=bytearray)
    reject_next: bool = False

    def pump(self) -> None:
        while True:
            event = self.core.next_event()
            self.out += self.core.data_to_send()
            if event is None:
                return
            if isinstance(event, CloseConnection):
                self.closed = event
                return
            self.decide(event)
            self.out += self.core.data_to_send()

    def decide(self, event: object) -> None:
        core = self.core
        if isinstance(event, CheckSender):
            core.answer(replies.SENDER_OK)
        elif isinstance(event, CheckRecipient):
            local, _, domain = event.address.rpartition("@")
            if domain != LOCAL_DOMAIN:
                core.answer(replies.RELAY_DENIED)
            elif local == "unknown":
                core.answer(replies.UNKNOWN_USER)
            else:
                core.answer(replies.RECIPIENT_OK, targets=(len(local),))
        elif isinstance(event, Authenticate):
            creds = event.credentials
            if creds.authcid == "alice" and creds.password.reveal() == "secret":
                core.auth_succeeded("alice")
            else:
                core.auth_failed()
        elif isinstance(event, StartTls):
            self.tls_discarded.append(event.discarded)
            core.tls_started()
        elif isinstance(event, MessageReceived):
            self.messages.append(event)
            if self.reject_next:
                core.reject(replies.MAILBOX_FULL)
            else:
                core.accept()

    def feed(self, data: bytes, *, bytewise: bool = False) -> bytes:
        start = len(self.out)
        pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
        for piece in pieces:
            if self.closed is not None:
                break
            self.core.receive_data(piece)
            self.pump()
        return bytes(self.out[start:])


def new_driver(**changes: object) -> Driver:
    driver = Driver(SmtpProtocol(settings(**changes)))
    driver.pump()
    return driver


def codes(output: bytes) -> list[str]:
    """The final line of each reply: its code and, when present, enhanced code."""
    result = []
    for line in output.decode().split("\r\n"):
        if len(line) >= 4 and line[3] == " ":
            result.append(" ".join(line.split(" ")[:2]) if line[4:5].isdigit() else line[:3])
    return result
