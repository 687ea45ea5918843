"""Pure name validation: domains, addresses, aliases, mailbox names, flags."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.store import names
from mailstack.store.records import InvalidName


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("Example.COM", "example.com"),
        ("mail.example.com.", "mail.example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.c-d.test", "a-b.c-d.test"),
    ],
)
def test_domains_accepted(given_name: str, expected: str) -> None:
    assert names.normalize_domain(given_name) == expected


@pytest.mark.parametrize(
    "bad", ["", "localhost", "-a.test", "a-.test", "a..test", "a_b.test", "a" * 64 + ".test"]
)
def test_domains_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        names.normalize_domain(bad)


def test_addresses() -> None:
    assert names.normalize_address("John.Doe@Example.TEST") == "John.Doe@example.test"
    assert names.address_key("John.Doe@Example.TEST") == "john.doe@example.test"
    assert names.normalize_address("j\u00f6rg+tag@example.test") == "j\u00f6rg+tag@example.test"
    for bad in ("", "x", "@example.test", "a@", ".a@example.test", "a.@example.test"):
        with pytest.raises(InvalidName):
            names.normalize_address(bad)
    with pytest.raises(InvalidName):
        names.normalize_address("x" * 65 + "@example.test")  # RFC 5321 4.5.3.1.1
    assert names.normalize_alias("@Example.TEST") == "@example.test"
    assert names.normalize_alias("Info@Example.TEST") == "Info@example.test"


def test_mailbox_names() -> None:
    assert names.normalize_mailbox("inbox") == "INBOX"
    assert names.normalize_mailbox("Inbox/Sub") == "INBOX/Sub"
    assert names.normalize_mailbox("Inboxes") == "Inboxes"
    assert names.normalize_mailbox("R\u00e9sum\u00e9s/2024") == "R\u00e9sum\u00e9s/2024"
    for bad in ("", "/", "a/", "/a", "a//b", "a*", "a%b", "tab\there", "x" * 1001):
        with pytest.raises(InvalidName):
            names.normalize_mailbox(bad)


def test_flags() -> None:
    got = names.normalize_flags(["\\SEEN", "\\recent", "$Forwarded", "\\Deleted"])
    assert got == {"\\Seen", "$Forwarded", "\\Deleted"}
    for bad in ("", "two words", "paren(", 'quote"', "\\"):
        with pytest.raises(InvalidName):
            names.normalize_flags([bad])
    with pytest.raises(TypeError):
        names.normalize_flags("\\Seen")
    assert names.flags_from_text(names.flags_to_text(got)) == got


_LEVEL = st.text(
    alphabet=st.characters(min_codepoint=0x20, blacklist_characters="/*%\x7f"),
    min_size=1,
    max_size=12,
)


@given(st.lists(_LEVEL, min_size=1, max_size=5))
def test_mailbox_normalisation_is_idempotent(levels: list[str]) -> None:
    name = "/".join(levels)
    once = names.normalize_mailbox(name)
    assert names.normalize_mailbox(once) == once
    assert once.split("/")[1:] == levels[1:]
