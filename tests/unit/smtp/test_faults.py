"""Capture mode's fault injection: the trigger grammar (faults.py) and what
the SMTP core does with each fault at RCPT and at the end of DATA/BDAT."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mailstack.smtp import faults
from mailstack.smtp.faults import Fault, Kind, Stage
from mailstack.smtp.protocol import SmtpProtocol, Stall, State
from tests.unit.smtp.driver import Driver, codes, settings

EHLO_MAIL = b"EHLO client.example\r\nMAIL FROM:<app@sender.example>\r\n"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("tempfail+retry@any.example", Fault(Kind.TEMPFAIL, Stage.RCPT)),
        ("PermFail+x@any.example", Fault(Kind.PERMFAIL, Stage.RCPT)),
        ("slow+@any.example", Fault(Kind.SLOW, Stage.RCPT)),
        ("disconnect+1@any.example", Fault(Kind.DISCONNECT, Stage.RCPT)),
        ("tempfail-data+x@any.example", Fault(Kind.TEMPFAIL, Stage.DATA)),
        ("disconnect-data+x@any.example", Fault(Kind.DISCONNECT, Stage.DATA)),
        ('"slow-data+q"@any.example', Fault(Kind.SLOW, Stage.DATA)),
        ("tempfail@any.example", None),
        ("tempfail-rcpt+x@any.example", None),
        ("user+tempfail@any.example", None),
        ("nothing@any.example", None),
    ],
)
def test_trigger_grammar(address: str, expected: Fault | None) -> None:
    assert faults.fault_of(address) == expected


def test_strongest_data_fault_decides() -> None:
    addresses = ["slow-data+a@x.example", "permfail-data+b@x.example", "ok@x.example"]
    assert faults.data_fault(addresses) == Fault(Kind.PERMFAIL, Stage.DATA)
    assert faults.data_fault(["tempfail+rcpt-only@x.example"]) is None


@dataclass
class StallingDriver(Driver):
    stalls: list[float] = field(default_factory=list)

    def decide(self, event: object) -> None:
        if isinstance(event, Stall):
            self.stalls.append(event.seconds)
            self.core.stall_over()
        else:
            super().decide(event)


def driver(*, fault_injection: bool = True) -> StallingDriver:
    core = SmtpProtocol(
        settings(fault_injection=fault_injection, fault_delay_seconds=7.5, max_errors=100)
    )
    d = StallingDriver(core)
    d.pump()
    return d


def test_rcpt_faults() -> None:
    d = driver()
    out = d.feed(
        EHLO_MAIL
        + b"RCPT TO:<tempfail+a@example.test>\r\n"
        + b"RCPT TO:<permfail+b@example.test>\r\n"
        + b"RCPT TO:<slow+c@example.test>\r\n"
    )
    assert codes(out)[-3:] == ["451 4.3.0", "550 5.7.1", "250 2.1.5"]
    assert d.stalls == [7.5]
    assert [r.address for r in d.core.envelope.recipients] == ["slow+c@example.test"]
    d.feed(b"RCPT TO:<disconnect+d@example.test>\r\nNOOP\r\n")
    assert d.closed is not None and "disconnect" in d.closed.reason
    assert d.core.state is State.CLOSED


def test_faults_are_ignored_when_switched_off() -> None:
    d = driver(fault_injection=False)
    out = d.feed(EHLO_MAIL + b"RCPT TO:<tempfail+a@example.test>\r\nDATA\r\nhi\r\n.\r\n")
    assert codes(out)[-3:] == ["250 2.1.5", "354", "250 2.0.0"]


@pytest.mark.parametrize(
    ("local", "reply"),
    [("tempfail-data+x", "451 4.3.0"), ("permfail-data+x", "550 5.7.1")],
)
def test_data_faults_refuse_the_message(local: str, reply: str) -> None:
    d = driver()
    out = d.feed(
        EHLO_MAIL + f"RCPT TO:<{local}@example.test>\r\n".encode() + b"DATA\r\nhi\r\n.\r\n"
    )
    assert codes(out)[-3:] == ["250 2.1.5", "354", reply]
    assert d.messages == []
    # The session goes on: a clean transaction afterwards is delivered.
    out = d.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<ok@example.test>\r\nDATA\r\nx\r\n.\r\n")
    assert codes(out)[-1] == "250 2.0.0" and len(d.messages) == 1


def test_slow_data_stalls_then_delivers_and_bdat_too() -> None:
    d = driver()
    out = d.feed(EHLO_MAIL + b"RCPT TO:<slow-data+x@example.test>\r\nDATA\r\nhi\r\n.\r\n")
    assert codes(out)[-1] == "250 2.0.0" and d.stalls == [7.5] and len(d.messages) == 1
    out = d.feed(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<slow-data+y@example.test>\r\nBDAT 2 LAST\r\nhi"
    )
    assert codes(out)[-1] == "250 2.0.0" and d.stalls == [7.5, 7.5] and len(d.messages) == 2


def test_disconnect_at_end_of_data_sends_no_reply() -> None:
    d = driver()
    out = d.feed(EHLO_MAIL + b"RCPT TO:<disconnect-data+x@example.test>\r\nDATA\r\nhi\r\n.\r\n")
    assert codes(out)[-1] == "354"
    assert d.closed is not None and d.messages == []


def test_capture_submission_takes_mail_without_auth() -> None:
    d = Driver(SmtpProtocol(settings(submission=True, auth_optional=True)))
    d.pump()
    out = d.feed(EHLO_MAIL + b"RCPT TO:<x@anywhere.example>\r\n")
    assert codes(out)[-2] == "250 2.1.0"
    strict = Driver(SmtpProtocol(settings(submission=True)))
    strict.pump()
    assert codes(strict.feed(EHLO_MAIL))[-1] == "530 5.7.0"
