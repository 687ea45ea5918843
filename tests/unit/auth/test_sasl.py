"""SASL PLAIN (RFC 4616) and LOGIN exchanges, fed the base64 text seen on the wire."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.auth import sasl
from mailstack.auth.sasl import Challenge, Credentials, SaslError
from mailstack.secret import Secret


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


USERNAME_PROMPT = b64(b"Username:")
PASSWORD_PROMPT = b64(b"Password:")


def plain() -> sasl.SaslExchange:
    return sasl.begin("PLAIN", plaintext_allowed=True)


def login() -> sasl.SaslExchange:
    return sasl.begin("login", plaintext_allowed=True)


# -- mechanism selection -------------------------------------------------


def test_plaintext_mechanisms_offered_only_when_allowed() -> None:
    assert sasl.mechanisms(plaintext_allowed=True) == ["PLAIN", "LOGIN"]
    assert sasl.mechanisms(plaintext_allowed=False) == []
    with pytest.raises(SaslError, match="not available"):
        sasl.begin("PLAIN", plaintext_allowed=False)


def test_unknown_mechanism_is_refused() -> None:
    with pytest.raises(SaslError, match="CRAM-MD5 not available"):
        sasl.begin("CRAM-MD5", plaintext_allowed=True)


def test_begin_is_case_insensitive_and_fresh() -> None:
    assert isinstance(sasl.begin("plain", plaintext_allowed=True), sasl.PlainExchange)
    assert login() is not login()


# -- PLAIN ---------------------------------------------------------------


def test_plain_initial_response() -> None:
    result = plain().start(b64(b"\x00alice@example.test\x00s3cret"))
    assert result == Credentials("alice@example.test", Secret("s3cret"), "")


def test_plain_without_initial_response_sends_empty_challenge() -> None:
    exchange = plain()
    assert exchange.start(None) == Challenge("")
    result = exchange.respond(b64(b"\x00alice@example.test\x00s3cret") + "\r\n")
    assert isinstance(result, Credentials)
    assert result.password.reveal() == "s3cret"


def test_plain_authzid_is_passed_on() -> None:
    result = plain().start(b64(b"bob@example.test\x00alice@example.test\x00pw"))
    assert isinstance(result, Credentials)
    assert (result.authzid, result.authcid) == ("bob@example.test", "alice@example.test")


def test_plain_utf8_fields() -> None:
    result = plain().start(b64("\x00jörg@example.test\x00pässwörd".encode()))
    assert isinstance(result, Credentials)
    assert result.authcid == "jörg@example.test"
    assert result.password.reveal() == "pässwörd"


def test_password_never_shows_in_repr() -> None:
    result = plain().start(b64(b"\x00alice\x00hunter2"))
    assert "hunter2" not in repr(result)
    assert "hunter2" not in str(result)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"alice\x00pw", "malformed"),
        (b"\x00alice\x00pw\x00extra", "malformed"),
        (b"", "malformed"),
        (b"\x00\x00pw", "empty"),
        (b"\x00alice\x00", "empty"),
        (b"\x00al\xffice\x00pw", "UTF-8"),
        (b"\x00alice\x00" + b"p" * 256, "too long"),
        (b"\x00" + b"a" * 256 + b"\x00pw", "too long"),
        (b"z" * 256 + b"\x00alice\x00pw", "too long"),
    ],
)
def test_plain_malformed_messages(message: bytes, reason: str) -> None:
    with pytest.raises(SaslError, match=reason) as info:
        plain().start(b64(message))
    assert not info.value.cancelled


def test_plain_fields_of_exactly_255_octets_are_accepted() -> None:
    result = plain().start(b64(b"z" * 255 + b"\x00" + b"a" * 255 + b"\x00" + b"p" * 255))
    assert isinstance(result, Credentials)
    assert len(result.password.reveal()) == 255


@pytest.mark.parametrize("bad", ["not base64!", "AAA", "AA=A", "QUJD\x00", "QU JD"])
def test_malformed_base64_is_refused(bad: str) -> None:
    with pytest.raises(SaslError, match="invalid base64"):
        plain().start(bad)


def test_empty_initial_response_marker() -> None:
    # RFC 4954 4: "=" is a zero-length initial response, which PLAIN rejects.
    with pytest.raises(SaslError, match="malformed"):
        plain().start("=")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_star_cancels(mechanism: str) -> None:
    exchange = sasl.begin(mechanism, plaintext_allowed=True)
    exchange.start(None)
    with pytest.raises(SaslError) as info:
        exchange.respond("*")
    assert info.value.cancelled
    assert info.value.reason == "authentication cancelled"


def test_star_as_initial_response_cancels() -> None:
    with pytest.raises(SaslError) as info:
        plain().start("*\r\n")
    assert info.value.cancelled


# -- LOGIN ---------------------------------------------------------------


def test_login_prompts_for_username_then_password() -> None:
    exchange = login()
    assert exchange.start(None) == Challenge(USERNAME_PROMPT)
    assert exchange.respond(b64(b"alice@example.test")) == Challenge(PASSWORD_PROMPT)
    result = exchange.respond(b64(b"s3cret"))
    assert result == Credentials("alice@example.test", Secret("s3cret"))


def test_login_initial_response_is_the_username() -> None:
    exchange = login()
    assert exchange.start(b64(b"alice@example.test")) == Challenge(PASSWORD_PROMPT)
    result = exchange.respond(b64(b"s3cret"))
    assert isinstance(result, Credentials)
    assert result.authcid == "alice@example.test"
    assert result.authzid == ""


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        (b"", b"pw", "empty user name"),
        (b"alice", b"", "empty password"),
        (b"\xff", b"pw", "UTF-8"),
        (b"alice", b"\xfe", "UTF-8"),
        (b"a" * 256, b"pw", "too long"),
        (b"alice", b"p" * 256, "too long"),
    ],
)
def test_login_bad_fields(username: bytes, password: bytes, reason: str) -> None:
    exchange = login()
    exchange.start(None)
    with pytest.raises(SaslError, match=reason):
        exchange.respond(b64(username))
        exchange.respond(b64(password))


def test_login_malformed_base64() -> None:
    exchange = login()
    exchange.start(None)
    with pytest.raises(SaslError, match="invalid base64"):
        exchange.respond("%%%")


# -- property: only SaslError ever escapes ------------------------------


@given(st.binary(max_size=600))
def test_any_plain_payload_gives_credentials_or_sasl_error(payload: bytes) -> None:
    try:
        result = plain().start(b64(payload))
    except SaslError:
        return
    assert isinstance(result, Credentials)
    assert result.authcid and result.password.reveal()


@given(st.text(max_size=100))
def test_any_text_line_gives_a_result_or_sasl_error(line: str) -> None:
    for exchange in (plain(), login()):
        exchange.start(None)
        try:
            result = exchange.respond(line)
        except SaslError as exc:
            assert exc.reason
        else:
            assert isinstance(result, Challenge | Credentials)
