"""Email authentication against the real server, a test DNS zone and real
clients on loopback: DKIM signatures made by submission verify with dkimpy
(rsa-sha256 and ed25519-sha256); the MX checks SPF, DKIM and DMARC, writes
Authentication-Results and applies the DMARC/SPF policy.

The MX sees a chosen client address: 127.0.0.2 and 127.0.0.3 are loopback
addresses the client socket binds to, and the zone's SPF records name them.
"""

from __future__ import annotations

import re
import smtplib
from pathlib import Path

import dkim
import pytest
import trio

from mailstack.config import DkimConfig, DkimKey, DnsConfig, Endpoint
from mailstack.dns import sync_resolver
from mailstack.smtp import dkim_keys
from mailstack.smtp.author import header_fields
from mailstack.smtp.dns_lookups import dkim_dnsfunc
from tests.integration.conftest import Stack, StackFactory
from tests.integration.test_smtp_smtplib import in_thread, messages_of
from tests.support.dns_server import Zone, serve_dns, txt

GOOD_IP, BAD_IP = "127.0.0.2", "127.0.0.3"


def signed_by_remote(key: dkim_keys.SigningKey, body: bytes = b"hello\r\n") -> bytes:
    message = (
        b"From: Sender <news@sender.test>\r\n"
        b"To: alice@example.test\r\n"
        b"Subject: checked\r\n"
        b"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\n"
        b"Message-ID: <m1@sender.test>\r\n"
        b"\r\n" + body
    )
    return (
        dkim.sign(message, b"sel", b"sender.test", key.private, signature_algorithm=b"rsa-sha256")
        + message
    )


def authentication_results(raw: bytes) -> list[str]:
    print(raw.split(b"\r\n\r\n")[0].decode(errors="replace"), "\n-----")
    return [v for n, v in header_fields(raw) if n == "authentication-results"]


def resinfo(value: str) -> list[str]:
    """The resinfo parts of an A-R value, whitespace collapsed."""
    return [" ".join(part.split()) for part in value.split(";")[1:]]


async def mx_stack(
    stack_factory: StackFactory, endpoint: Endpoint, **smtp: object
) -> tuple[Stack, tuple[str, int]]:
    stack = await stack_factory(
        services=("smtp",),
        smtp={"authentication_checks": True, "authentication_timeout_seconds": 10.0, **smtp},
        dns=DnsConfig(nameservers=(endpoint,), timeout_seconds=2),
    )
    return stack, stack.addr("smtp")


def send_from(
    source_ip: str, address: tuple[str, int], sender: str, message: bytes, helo: str
) -> tuple[int, bytes]:
    """Send one message from ``source_ip``; (code, text) of the end of DATA."""
    with smtplib.SMTP(*address, source_address=(source_ip, 0), timeout=30) as client:
        client.ehlo(helo)
        client.mail(sender)
        client.rcpt("alice@example.test")
        return client.data(message)


@pytest.fixture
def sender_key() -> dkim_keys.SigningKey:
    return dkim_keys.parse("sender.test", "sel", dkim_keys.generate("rsa", 1024))


@pytest.fixture
def zone(sender_key: dkim_keys.SigningKey) -> Zone:
    zone = Zone()
    zone.add("sender.test", "TXT", txt(f"v=spf1 ip4:{GOOD_IP} -all"))
    zone.add("mta.sender.test", "TXT", txt(f"v=spf1 ip4:{GOOD_IP} -all"))
    zone.add("_dmarc.sender.test", "TXT", txt("v=DMARC1; p=reject"))
    zone.add("sel._domainkey.sender.test", "TXT", txt(sender_key.record_text))
    zone.add("relaxed.test", "TXT", txt("v=spf1 ?all"))
    zone.fail("broken.test")
    zone.fail("_dmarc.broken.test")
    return zone


async def test_mx_results_and_dmarc_reject(
    stack_factory: StackFactory,
    nursery: trio.Nursery,
    zone: Zone,
    sender_key: dkim_keys.SigningKey,
) -> None:
    with trio.fail_after(60):
        endpoint = await nursery.start(serve_dns, zone)
        stack, mx = await mx_stack(stack_factory, endpoint)
        good = signed_by_remote(sender_key)
        tampered = good.replace(b"hello", b"HELLO")

        async def send(source_ip: str, message: bytes) -> tuple[int, bytes]:
            return await in_thread(
                send_from, source_ip, mx, "news@sender.test", message, "mta.sender.test"
            )

        # 1. SPF pass (MAIL FROM and HELO), DKIM pass, DMARC pass.
        assert (await send(GOOD_IP, good))[0] == 250
        # 2. From an address SPF does not allow, still DKIM-signed: DMARC
        # passes on the aligned signature; SPF fail is only marked.
        assert (await send(BAD_IP, good))[0] == 250
        # 3. SPF pass but the body changed: DKIM fails, DMARC passes on SPF.
        assert (await send(GOOD_IP, tampered))[0] == 250
        # 4. Neither: DMARC fails and sender.test says p=reject -> 550 5.7.1.
        code, text = await send(BAD_IP, tampered)
        assert (code, text[:5]) == (550, b"5.7.1")

        stored = await messages_of(stack, "alice@example.test")
        assert len(stored) == 3  # the rejected one left nothing behind
        results = [resinfo(authentication_results(raw)[0]) for raw in stored]
        b_tag = re.search(rb"\bb=([^;]{8})", re.sub(rb"\s", b"", good)).group(1)  # type: ignore[union-attr]
        dkim_pass = "dkim=pass header.d=sender.test header.s=sel header.b="
        assert results[0][2].replace('"', "") == dkim_pass + b_tag.decode()
        assert results[0][0] == "spf=pass smtp.mailfrom=sender.test"
        assert results[0][1] == "spf=pass smtp.helo=mta.sender.test"
        assert results[0][3] == "dmarc=pass (p=reject dis=none) header.from=sender.test"
        assert results[1][0] == "spf=fail smtp.mailfrom=sender.test"
        assert results[1][2].startswith("dkim=pass")
        assert results[1][3].startswith("dmarc=pass")
        assert results[2][0] == "spf=pass smtp.mailfrom=sender.test"
        assert results[2][2].startswith('dkim=fail reason="body hash mismatch" header.d=')
        assert results[2][3].startswith("dmarc=pass")
        for raw in stored:
            assert authentication_results(raw)[0].startswith("mail.example.test;")


async def test_mx_temperror_forged_results_and_spf_reject(
    stack_factory: StackFactory, nursery: trio.Nursery, zone: Zone
) -> None:
    with trio.fail_after(60):
        endpoint = await nursery.start(serve_dns, zone)
        stack, mx = await mx_stack(stack_factory, endpoint, spf_fail="reject")
        forged = (
            b"Authentication-Results: mail.example.test; spf=pass smtp.mailfrom=broken.test\r\n"
            b"Authentication-Results: (comment) MAIL.example.test;\r\n\tdkim=pass\r\n"
            b"Authentication-Results: other.example; spf=pass smtp.mailfrom=broken.test\r\n"
            b"From: x@broken.test\r\nTo: alice@example.test\r\nSubject: dns down\r\n\r\nbody\r\n"
        )
        # SERVFAIL for the sender's SPF and DMARC records: temperror, delivered.
        code, _ = await in_thread(send_from, BAD_IP, mx, "x@broken.test", forged, "[127.0.0.3]")
        assert code == 250
        # SPF fail with spf_fail = "reject": refused even without DMARC.
        plain = b"From: news@sender.test\r\nSubject: spf\r\n\r\nbody\r\n"
        code, text = await in_thread(send_from, BAD_IP, mx, "news@sender.test", plain, "x.test")
        assert (code, text[:5]) == (550, b"5.7.1")
        # The null reverse-path is checked as postmaster@HELO (RFC 7208 2.4).
        bounce = b"From: mailer-daemon@relaxed.test\r\nSubject: bounce\r\n\r\nbody\r\n"
        code, _ = await in_thread(send_from, GOOD_IP, mx, "", bounce, "relaxed.test")
        assert code == 250

        first, second = await messages_of(stack, "alice@example.test")
        values = authentication_results(first)
        # Ours on top; the two claiming our authserv-id are gone, the other kept.
        assert len(values) == 2
        assert values[1].startswith("other.example;")
        ours = resinfo(values[0])
        assert ours[0].startswith('spf=temperror reason="SPF Temporary Error: DNS ')
        assert ours[0].endswith("smtp.mailfrom=broken.test")
        assert ours[1] == "dkim=none"
        assert ours[2].startswith("dmarc=temperror")
        assert ours[2].endswith("header.from=broken.test")
        assert resinfo(authentication_results(second)[0])[0] == "spf=neutral smtp.helo=relaxed.test"


async def test_submission_signs_with_rsa_and_ed25519(
    stack_factory: StackFactory, nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        zone = Zone()
        entries = []
        for domain, selector, algorithm in (
            ("example.test", "r2026", "rsa"),
            ("example.test", "e2026", "ed25519"),
            ("other.test", "o2026", "ed25519"),
        ):
            path = tmp_path / f"{domain}.{selector}.key"
            dkim_keys.write_private(path, dkim_keys.generate(algorithm))
            key = dkim_keys.parse(domain, selector, path.read_bytes())
            zone.add(key.record_name, "TXT", txt(key.record_text))
            entries.append(DkimKey(domain=domain, selector=selector, key_file=str(path)))
        endpoint = await nursery.start(serve_dns, zone)
        stack = await stack_factory(services=("submission",), dkim=DkimConfig(keys=tuple(entries)))
        host, port = stack.addr("submission", implicit_tls=True)
        context = stack.client_ssl_context()

        def submit(author: str) -> None:
            message = (
                f"From: Alice <{author}>\r\nTo: bob@example.test\r\nSubject: signed\r\n\r\n"
                "no Date, no Message-ID: the server adds both, under the signature\r\n"
            ).encode()
            with smtplib.SMTP_SSL(host, port, context=context, timeout=30) as client:
                client.login("alice@example.test", "alice-password")
                client.sendmail("alice@example.test", ["bob@example.test"], message)

        await in_thread(submit, "alice@example.test")
        await in_thread(submit, "alice@unsigned.test")  # no key for that From domain
        # A key exists, but other.test is not the domain of alice's MAIL FROM:
        # no signing for a domain the account does not send as.
        await in_thread(submit, "ceo@other.test")
        signed, *unsigned = await messages_of(stack, "bob@example.test")
        assert len(unsigned) == 2
        assert all(b"DKIM-Signature" not in raw for raw in unsigned)

        fields = [v for n, v in header_fields(signed) if n == "dkim-signature"]
        assert [re.search(r"a=([\w-]+)", f).group(1) for f in fields] == [  # type: ignore[union-attr]
            "rsa-sha256",
            "ed25519-sha256",
        ]
        h_tag = re.sub(r"\s", "", re.search(r"h=([^;]*)", fields[0]).group(1))  # type: ignore[union-attr]
        assert h_tag.split(":").count("from") == 2  # From oversigned (RFC 6376 5.4.2)
        assert {"date", "message-id", "subject", "to"} <= set(h_tag.split(":"))

        dnsfunc = dkim_dnsfunc(sync_resolver(DnsConfig(nameservers=(endpoint,))))

        def verify(index: int) -> bool:
            return bool(dkim.DKIM(signed).verify(idx=index, dnsfunc=dnsfunc))

        assert await in_thread(verify, 0)
        assert await in_thread(verify, 1)
        # A changed message must not verify: the check can fail.
        altered = signed.replace(b"Subject: signed", b"Subject: changed")
        assert not await in_thread(lambda: dkim.DKIM(altered).verify(idx=1, dnsfunc=dnsfunc))


async def test_checks_end_within_their_time_limit(
    stack_factory: StackFactory, nursery: trio.Nursery
) -> None:
    """A DNS server that never answers: the message is still delivered once
    authentication_timeout_seconds passed, with temperror results."""
    silent = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.1", 0))  # receives queries, answers none
    endpoint = Endpoint("127.0.0.1", silent.getsockname()[1])
    with silent, trio.fail_after(30):
        stack = await stack_factory(
            services=("smtp",),
            smtp={"authentication_checks": True, "authentication_timeout_seconds": 0.5},
            dns=DnsConfig(nameservers=(endpoint,), timeout_seconds=3),
        )
        message = b"From: a@slow.test\r\nSubject: slow\r\n\r\nbody\r\n"
        code, _ = await in_thread(
            send_from, GOOD_IP, stack.addr("smtp"), "a@slow.test", message, "mta.slow.test"
        )
        assert code == 250
        (raw,) = await messages_of(stack, "alice@example.test")
        results = resinfo(authentication_results(raw)[0])
        assert results[0] == (
            'spf=temperror reason="check did not finish in time" smtp.mailfrom=slow.test'
        )
        assert results[-1] == (
            'dmarc=temperror reason="check did not finish in time" header.from=slow.test'
        )


async def test_dmarc_reject_only_marked_when_configured(
    stack_factory: StackFactory,
    nursery: trio.Nursery,
    zone: Zone,
    sender_key: dkim_keys.SigningKey,
) -> None:
    with trio.fail_after(60):
        endpoint = await nursery.start(serve_dns, zone)
        stack, mx = await mx_stack(stack_factory, endpoint, dmarc_reject="mark")
        tampered = signed_by_remote(sender_key).replace(b"hello", b"HELLO")
        code, _ = await in_thread(
            send_from, BAD_IP, mx, "news@sender.test", tampered, "mta.sender.test"
        )
        assert code == 250
        (raw,) = await messages_of(stack, "alice@example.test")
        results = resinfo(authentication_results(raw)[0])
        assert results[0] == "spf=fail smtp.mailfrom=sender.test"
        assert results[-1] == (
            'dmarc=fail (p=reject dis=reject) reason="no aligned SPF or DKIM pass"'
            " header.from=sender.test"
        )
