from __future__ import annotations

import pytest

from mailstack.smtp import commands, replies
from mailstack.smtp.commands import Body, CommandError
from mailstack.smtp.replies import Reply


def test_single_line_reply_carries_enhanced_code() -> None:
    assert replies.OK.wire == b"250 2.0.0 OK\r\n"


def test_multi_line_reply_has_enhanced_code_on_every_line() -> None:
    out = Reply(214, "2.0.0", ("a", "b", "c")).wire
    assert out == b"214-2.0.0 a\r\n214-2.0.0 b\r\n214 2.0.0 c\r\n"


def test_greeting_and_intermediate_replies_have_no_enhanced_code() -> None:
    assert replies.greeting("mx").wire == b"220 mx ESMTP mailstack ready\r\n"
    assert replies.START_DATA.wire.startswith(b"354 end data")
    assert Reply(334, None, "").wire == b"334 \r\n"


def test_every_catalogue_reply_is_well_formed() -> None:
    for name in dir(replies):
        reply = getattr(replies, name)
        if isinstance(reply, Reply) and reply.code not in (334, 354):
            assert reply.enhanced is not None, name
            klass = str(reply.code)[0]
            assert reply.enhanced.startswith(klass + "."), name


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("EHLO client.example", commands.Hello("client.example", extended=True)),
        ("helo [192.0.2.1]", commands.Hello("[192.0.2.1]", extended=False)),
        ("EHLO my_pc", commands.Hello("my_pc", extended=True)),
        ("MAIL FROM:<>", commands.Mail(sender="")),
        ("mail from:<a@b.example>", commands.Mail(sender="a@b.example")),
        ("MAIL FROM: <a@b.example>", commands.Mail(sender="a@b.example")),
        (
            "MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME",
            commands.Mail(sender="a@b.example", size=1000, body=Body.EIGHT_BIT),
        ),
        (
            "MAIL FROM:<ü@b.example> SMTPUTF8",
            commands.Mail(sender="ü@b.example", smtputf8=True),
        ),
        ('MAIL FROM:<"a b"@c.example>', commands.Mail(sender='"a b"@c.example')),
        ("RCPT TO:<u@v.example>", commands.Rcpt("u@v.example")),
        ("RCPT TO:<@relay.example,@r2.example:u@v.example>", commands.Rcpt("u@v.example")),
        ("RCPT TO:<Postmaster>", commands.Rcpt("postmaster")),
        ("RCPT TO:<u@[192.0.2.1]>", commands.Rcpt("u@[192.0.2.1]")),
        ("DATA", commands.Data()),
        ("BDAT 100", commands.Bdat(100, last=False)),
        ("BDAT 0 LAST", commands.Bdat(0, last=True)),
        ("RSET", commands.Rset()),
        ("NOOP anything", commands.Noop()),
        ("QUIT", commands.Quit()),
        ("VRFY alice", commands.Vrfy("alice")),
        ("HELP", commands.Help("")),
        ("STARTTLS", commands.StartTls()),
        ("AUTH plain", commands.Auth("PLAIN", None)),
        ("AUTH PLAIN =", commands.Auth("PLAIN", "=")),
        ("EXPN list", commands.NotImplemented_("EXPN")),
    ],
)
def test_parse_valid(line: str, expected: commands.Command) -> None:
    assert commands.parse(line) == expected


def test_auth_parameter_only_when_advertised() -> None:
    line = "MAIL FROM:<a@b.example> AUTH=a+2Bb@b.example"
    assert commands.parse(line, auth_param=True) == commands.Mail(
        sender="a@b.example", auth="a+b@b.example"
    )
    with pytest.raises(CommandError) as info:
        commands.parse(line)
    assert info.value.reply == replies.BAD_PARAMETER


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("FOO bar", replies.UNRECOGNIZED),
        ("", replies.UNRECOGNIZED),
        ("EHLO", replies.SYNTAX),
        ("EHLO bad_name!", replies.SYNTAX),
        ("MAIL TO:<a@b.example>", replies.SYNTAX),
        ("MAIL FROM:a@b.example", replies.BAD_SENDER),
        ("MAIL FROM:<a>", replies.BAD_SENDER),
        ("MAIL FROM:<a@b.example> SIZE=abc", replies.BAD_PARAMETER),
        ("MAIL FROM:<a@b.example> BODY=BINARYMIME", replies.BAD_PARAMETER),
        ("MAIL FROM:<a@b.example> SIZE=1 SIZE=2", replies.SYNTAX),
        ("MAIL FROM:<a@b.example> FOO", replies.BAD_PARAMETER),
        ("MAIL FROM:<ü@b.example>", replies.NON_ASCII_WITHOUT_SMTPUTF8),
        ("RCPT TO:<>", replies.BAD_RECIPIENT),
        ("RCPT TO:<a@b@c.example>", replies.BAD_RECIPIENT),
        ("RCPT TO:<a@b.example>junk", replies.BAD_RECIPIENT),
        ("RCPT TO:<a@b.example> NOTIFY=NEVER", replies.BAD_PARAMETER),
        ("RCPT TO:<a..b@c.example>", replies.BAD_RECIPIENT),
        ("RCPT TO:<" + "a" * 65 + "@c.example>", replies.BAD_RECIPIENT),
        ("DATA x", replies.NO_ARGUMENTS),
        ("BDAT", replies.SYNTAX),
        ("BDAT -1", replies.SYNTAX),
        ("BDAT 1 NOTLAST", replies.SYNTAX),
        ("QUIT now", replies.NO_ARGUMENTS),
        ("VRFY", replies.SYNTAX),
        ("STARTTLS x", replies.NO_ARGUMENTS),
        ("AUTH", replies.SYNTAX),
        ("AUTH PLAIN a b", replies.SYNTAX),
    ],
)
def test_parse_invalid(line: str, reply: Reply) -> None:
    with pytest.raises(CommandError) as info:
        commands.parse(line)
    assert info.value.reply == reply


def test_unquote_local_part() -> None:
    assert commands.unquote_local_part('"a\\"b@c"') == 'a"b@c'
    assert commands.unquote_local_part("plain") == "plain"
