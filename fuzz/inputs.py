"""Command-shaped fuzz inputs: each protocol's words with random arguments.

Used by the CI property tests (tests/fuzz) and by ``fuzz/run.py --hypothesis``.
"""

from __future__ import annotations

from hypothesis import strategies as st

SMTP = [
    b"EHLO",
    b"HELO",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"DATA",
    b"BDAT",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"VRFY",
    b"EXPN",
    b"HELP",
    b"STARTTLS",
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"<a@example.test>",
    b"<>",
    b"SIZE=",
    b"BODY=8BITMIME",
    b"SMTPUTF8",
    b"LAST",
    b".",
    b"AGFsaWNlAHNlY3JldA==",
    b"*",
    b"=",
]
IMAP = [
    b"a1",
    b"CAPABILITY",
    b"LOGIN",
    b"AUTHENTICATE PLAIN",
    b"SELECT",
    b"EXAMINE",
    b"FETCH",
    b"UID",
    b"STORE",
    b"SEARCH",
    b"APPEND",
    b"EXPUNGE",
    b"LIST",
    b"LSUB",
    b"STATUS",
    b"CREATE",
    b"RENAME",
    b"DELETE",
    b"IDLE",
    b"DONE",
    b"ENABLE",
    b"ID",
    b"NAMESPACE",
    b"COPY",
    b"MOVE",
    b"LOGOUT",
    b"INBOX",
    b"1:*",
    b"*",
    b"(FLAGS BODY[HEADER.FIELDS (A)])",
    b"BODY.PEEK[1.2.MIME]<0.10>",
    b"+FLAGS.SILENT",
    b"(\\Seen \\Deleted)",
    b"{5}",
    b"{3+}",
    b"~{4}",
    b'"quoted \\" str"',
    b"NIL",
    b"(",
    b")",
    b"OR",
    b"NOT",
    b"SINCE 1-Jan-2020",
    b"CHARSET UTF-8",
    b'"&AOk-t&AOk-"',
    b"RETURN (SPECIAL-USE)",
    b"UTF8=ACCEPT",
]
POP3 = [
    b"USER",
    b"PASS",
    b"APOP",
    b"AUTH",
    b"AUTH PLAIN",
    b"STAT",
    b"LIST",
    b"RETR",
    b"DELE",
    b"NOOP",
    b"RSET",
    b"QUIT",
    b"TOP",
    b"UIDL",
    b"CAPA",
    b"STLS",
    b"alice",
    b"1",
    b"0",
    b"-1",
    b"99999999999999999999",
    b"*",
    b"AGFsaWNlAHB3",
]
SASL = [b"PLAIN", b"LOGIN", b"plain", b"SCRAM-SHA-256", b"", b"*", b"=", b"AGFsaWNlAHB3"]
MIME = [
    b"Content-Type: multipart/mixed; boundary=a\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain; charset=utf-8\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC\r\n",
    b"Subject: =?utf-8?b?w6k=?=\r\n",
    b"From: A <a@b>, (c) d@e\r\n",
    b"To: undisclosed:;\r\n",
    b"\r\n",
    b"--a\r\n",
    b"--a--\r\n",
    b"body\r\n",
    b"\xff\xfe\r\n",
]
VOCABULARY = {"smtp": SMTP, "imap": IMAP, "pop3": POP3, "sasl": SASL, "mime": MIME}


def shaped(name: str) -> st.SearchStrategy[bytes]:
    """A control byte (see targets._chunks), then lines of protocol words and
    random arguments, ended by CRLF, bare LF or NUL."""
    word = st.sampled_from(VOCABULARY[name])
    junk = st.binary(max_size=12)
    line = st.lists(st.one_of(word, word, junk), min_size=1, max_size=6).map(b" ".join)
    ending = st.sampled_from([b"\r\n", b"\n", b"\r\n", b"\0"])
    body = st.lists(st.tuples(line, ending).map(b"".join), max_size=12).map(b"".join)
    return st.tuples(st.binary(min_size=1, max_size=1), body).map(b"".join)
