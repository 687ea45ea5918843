"""`mailstack dkim keygen` and `mailstack dns-records` as a new user runs
them: the printed config lines are pasted into the config file, the printed
records parse as a DNS zone, and a message signed with the new keys
verifies with dkimpy against exactly those records."""

from __future__ import annotations

import stat
from pathlib import Path

import dkim
import dns.rdatatype
import dns.zone

from mailstack.config import load_config
from mailstack.smtp import dkim_keys
from mailstack.smtp.dkim_signing import DkimSigner
from tests.cli.test_cli import assert_fails, assert_ok, config_file, mailstack_cmd

__all__ = ["config_file"]  # the fixture, used by name


def config_lines(output: str) -> str:
    start = output.index("[[dkim.keys]]")
    return output[start:]


def test_keygen_then_dns_records_then_a_verifying_signature(config_file: Path) -> None:
    config_file.write_text(
        config_file.read_text()
        + '[submission]\nlisten = ["0.0.0.0:587"]\ntls_listen = ["0.0.0.0:465"]\n'
        + '[imap]\ntls_listen = ["[::]:993"]\n[pop3]\nlisten = ["127.0.0.1:110"]\n'
        + '[smtp]\nlisten = ["0.0.0.0:25"]\n'
    )
    rsa = assert_ok(mailstack_cmd("dkim", "keygen", "example.test", "r1", config=config_file))
    ed = assert_ok(
        mailstack_cmd(
            "dkim", "keygen", "example.test", "e1", "--algorithm", "ed25519", config=config_file
        )
    )
    key_file = config_file.parent / "data" / "dkim" / "example.test.r1.key"
    assert f"wrote a 2048-bit RSA private key to {key_file} (mode 0600)" in rsa
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = mailstack_cmd("dkim", "keygen", "example.test", "r1", config=config_file)
    assert_fails(again, 1, "exists; delete it or choose another selector")

    with config_file.open("a") as file:
        file.write(config_lines(rsa) + config_lines(ed))
    zone_text = assert_ok(mailstack_cmd("dns-records", "example.test", config=config_file))
    zone = dns.zone.from_text(
        zone_text, origin="example.test.", relativize=False, check_origin=False
    )

    def rdatas(name: str, rdtype: str) -> list[str]:
        node = zone.get_rdataset(name, dns.rdatatype.from_text(rdtype))
        return [r.to_text() for r in node] if node else []

    assert rdatas("example.test.", "MX") == ["10 mail.example.test."]
    assert rdatas("example.test.", "TXT") == ['"v=spf1 mx -all"']
    assert rdatas("_dmarc.example.test.", "TXT") == ['"v=DMARC1; p=quarantine"']
    srv = {s: rdatas(f"{s}.example.test.", "SRV") for s in ("_submission._tcp", "_imaps._tcp")}
    assert srv == {
        "_submission._tcp": ["0 1 587 mail.example.test."],
        "_imaps._tcp": ["0 1 993 mail.example.test."],
    }
    assert rdatas("_imap._tcp.example.test.", "SRV") == ["0 0 0 ."]  # RFC 6186 3.4
    assert rdatas("_pop3._tcp.example.test.", "SRV") == ["0 0 0 ."]  # loopback only

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        found = zone.get_rdataset(name.decode(), "TXT")
        return b"".join(next(iter(found)).strings) if found else None

    config = load_config(config_file)
    message = b"From: alice@example.test\r\nTo: b@x.test\r\nSubject: hi\r\n\r\nhello\r\n"
    signed = DkimSigner(dkim_keys.load(config)).sign(message, "alice@example.test") + message
    assert dkim.DKIM(signed).verify(idx=0, dnsfunc=dnsfunc)
    assert dkim.DKIM(signed).verify(idx=1, dnsfunc=dnsfunc)
    assert not dkim.DKIM(signed.replace(b"Subject: hi", b"Subject: ho")).verify(dnsfunc=dnsfunc)


def test_dns_records_without_keys_says_how_to_make_one(config_file: Path) -> None:
    out = assert_ok(mailstack_cmd("dns-records", "Example.TEST", config=config_file))
    assert "; no [[dkim.keys]] for example.test: create one with" in out
    assert "_domainkey" not in out
    assert "_submission._tcp.example.test." in out
    policy = mailstack_cmd("dns-records", "example.test", "--dmarc-policy", "reject")
    assert '"v=DMARC1; p=reject"' in assert_ok(policy)
