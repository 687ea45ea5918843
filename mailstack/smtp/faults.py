"""PURE fault injection for capture mode: recipient local parts that make the
server misbehave on purpose, so mail-sending code can test its retry and
error handling (``[capture] fault_injection = true``; README lists the
triggers).

``KIND+anything@any.domain`` acts at RCPT; ``KIND-data+anything@...`` is
accepted at RCPT and acts at the end of DATA (or the last BDAT chunk):

- ``tempfail``: 451 4.3.0 (the client should retry later)
- ``permfail``: 550 5.7.1 (the client should give up)
- ``slow``: stall ``fault_delay_seconds`` before answering, then go on
  normally (to test the client's timeouts)
- ``disconnect``: close the connection without a reply

The SMTP core (protocol.py) asks :func:`rcpt_fault` / :func:`data_fault`
and applies the answer; nothing else here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from mailstack.smtp.replies import Reply


class Kind(enum.Enum):
    # Ordered by strength: when several recipients carry DATA faults, the
    # strongest one decides (one reply answers the whole message).
    SLOW = 1
    TEMPFAIL = 2
    PERMFAIL = 3
    DISCONNECT = 4


class Stage(enum.Enum):
    RCPT = "rcpt"
    DATA = "data"


@dataclass(frozen=True, slots=True)
class Fault:
    kind: Kind
    stage: Stage

    @property
    def reply(self) -> Reply | None:
        """The reply a failing fault answers with (None: slow / disconnect)."""
        if self.kind is Kind.TEMPFAIL:
            return TEMPFAIL
        if self.kind is Kind.PERMFAIL:
            return PERMFAIL
        return None


TEMPFAIL = Reply(451, "4.3.0", "injected temporary failure (tempfail+), try again later")
PERMFAIL = Reply(550, "5.7.1", "injected permanent failure (permfail+)")

_KINDS = {kind.name.lower(): kind for kind in Kind}


def fault_of(address: str) -> Fault | None:
    """The fault a recipient address asks for, if any."""
    local = address.rpartition("@")[0].strip('"').lower()
    trigger, plus, _tag = local.partition("+")
    if not plus:
        return None
    name, dash, stage = trigger.partition("-")
    kind = _KINDS.get(name)
    if kind is None or (dash and stage != "data"):
        return None
    return Fault(kind, Stage.DATA if dash else Stage.RCPT)


def rcpt_fault(address: str) -> Fault | None:
    fault = fault_of(address)
    return fault if fault is not None and fault.stage is Stage.RCPT else None


def data_fault(addresses: Iterable[str]) -> Fault | None:
    """The strongest end-of-DATA fault among the accepted recipients."""
    faults = [f for f in map(fault_of, addresses) if f is not None and f.stage is Stage.DATA]
    return max(faults, key=lambda f: f.kind.value, default=None)
