"""Small decisions of outbound delivery: retry spacing, loop counting, and
when a message needs SMTPUTF8 from the next hop."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from mailstack import mime
from mailstack.config import OutboundConfig
from mailstack.smtp.delivery import hop_count, needs_smtputf8
from mailstack.smtp.queue_results import backoff


def test_backoff_doubles_up_to_the_maximum() -> None:
    config = OutboundConfig(retry_initial_seconds=300, retry_max_seconds=3600)
    assert [backoff(config, n) for n in range(6)] == [300, 600, 1200, 2400, 3600, 3600]
    assert backoff(config, 10_000) == 3600


def test_hop_count_counts_received_fields_in_the_header_only() -> None:
    message = (
        b"Received: from a by b; x\r\n"
        b"received : from c\r\n\tby d; y\r\n"
        b"X-Received: no\r\n"
        b"Subject: hi\r\n\r\n"
        b"Received: in the body does not count\r\n"
    )
    assert hop_count(message) == 2


def test_smtputf8_only_when_something_is_utf8() -> None:
    ascii_message = b"Subject: hi\r\n\r\nbody \xc3\xa9\r\n"
    utf8_header = "Subject: caf\u00e9\r\n\r\nbody\r\n".encode()
    assert not needs_smtputf8(True, "a@b.test", ("c@d.test",), ascii_message)
    assert needs_smtputf8(True, "a@b.test", ("c@d.test",), utf8_header)
    assert needs_smtputf8(True, "j\u00f6rg@b.test", ("c@d.test",), ascii_message)
    assert not needs_smtputf8(False, "a@b.test", ("c@d.test",), utf8_header)


_LINES = [
    b"Received: from a by b; x",
    b"received  : from c",
    b"RECEIVED\t:",
    b"\tby d; y",
    b" Received: a folded line, not a field",
    b"X-Received: no",
    b"Received-SPF: pass",
    b"Receivedx: no",
    b"Subject: Received: no",
    b"Received",
    b"",
]


@given(
    header=st.lists(st.sampled_from(_LINES), max_size=12),
    body=st.lists(st.sampled_from(_LINES), max_size=4),
    newline=st.sampled_from([b"\r\n", b"\n"]),
)
@example(header=[b"", b"Received: x"], body=[], newline=b"\r\n")  # no header at all
def test_hop_count_agrees_with_a_multiline_search_of_the_header(
    header: list[bytes], body: list[bytes], newline: bytes
) -> None:
    message = newline.join([*header, b"", *body])
    block = message[: mime.split_header(message, 0, len(message))]
    assert hop_count(message) == len(re.findall(rb"(?im)^Received[ \t]*:", block))
