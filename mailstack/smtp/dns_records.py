"""Every DNS record a mail domain needs, in zone-file syntax (RFC 1035 5), as
the configuration implies them: MX (RFC 5321 5.1), SPF (RFC 7208), the DKIM keys
(RFC 6376 3.6.1), DMARC (RFC 7489 6.1) and the SRV records mail clients
use to configure themselves (RFC 6186, _submissions per RFC 8314 5.1)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from mailstack.config import Config, Endpoint
from mailstack.smtp.dkim_keys import SigningKey

TTL = 3600
DMARC_POLICIES = ("none", "quarantine", "reject")
# (SRV service, config section, implicit TLS?) in RFC 6186 3.1-3.3 order.
SRV_SERVICES = (
    ("_submission._tcp", "submission", False),
    ("_submissions._tcp", "submission", True),
    ("_imap._tcp", "imap", False),
    ("_imaps._tcp", "imap", True),
    ("_pop3._tcp", "pop3", False),
    ("_pop3s._tcp", "pop3", True),
)


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    rdtype: str
    data: str
    comment: str = ""  # a zone-file comment line printed above the record


def quote_txt(text: str) -> str:
    """TXT rdata as quoted strings of at most 255 octets (RFC 1035 3.3.14;
    a DKIM key is longer and is split, RFC 6376 3.6.2.2)."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def _public_port(endpoints: Sequence[Endpoint]) -> int | None:
    """The port of the first listener reachable from other hosts."""
    for endpoint in endpoints:
        try:
            if ipaddress.ip_address(endpoint.host).is_loopback:
                continue
        except ValueError:
            if endpoint.host == "localhost":
                continue
        return endpoint.port
    return None


def records(
    config: Config, domain: str, keys: Sequence[SigningKey], *, dmarc_policy: str = "quarantine"
) -> list[Record]:
    domain = domain.lower().rstrip(".")
    host = config.hostname.rstrip(".") + "."
    out = [
        Record(
            domain + ".",
            "MX",
            f"10 {host}",
            f"MX: other servers deliver mail for {domain} to {config.hostname}, port 25.\n"
            f"{config.hostname} also needs A/AAAA records with this server's public addresses,\n"
            f"and the reverse DNS (PTR) of those addresses should name {config.hostname}.",
        ),
        Record(
            domain + ".",
            "TXT",
            quote_txt("v=spf1 mx -all"),
            f"SPF: only the MX hosts of {domain} send its mail; any other sender fails.",
        ),
    ]
    own_keys = [k for k in keys if k.domain == domain]
    for key in own_keys:
        comment = f"DKIM public key ({key.algorithm}) of the [[dkim.keys]] selector {key.selector}."
        out.append(Record(key.record_name + ".", "TXT", quote_txt(key.record_text), comment))
    out.append(
        Record(
            f"_dmarc.{domain}.",
            "TXT",
            quote_txt(f"v=DMARC1; p={dmarc_policy}"),
            f"DMARC: receivers apply p={dmarc_policy} to mail with a From of {domain}\n"
            "that has neither an aligned SPF pass nor an aligned DKIM signature.",
        )
    )
    for index, (service, section, implicit_tls) in enumerate(SRV_SERVICES):
        settings = getattr(config, section)
        port = _public_port(settings.tls_listen if implicit_tls else settings.listen)
        comment = (
            'Client autoconfiguration (RFC 6186); target "." = not offered.' if index == 0 else ""
        )
        data = f"0 1 {port} {host}" if port is not None else "0 0 0 ."
        out.append(Record(f"{service}.{domain}.", "SRV", data, comment))
    return out


def zone_text(config: Config, domain: str, found: list[Record], has_keys: bool) -> str:
    lines = [f"; DNS records for {domain} (mailstack dns-records)"]
    if not _public_port(config.smtp.listen):
        lines.append("; note: [smtp] has no public listener, so this server receives no mail")
    elif _public_port(config.smtp.listen) != 25:
        lines.append("; note: [smtp] does not listen on port 25, where other servers deliver")
    if not has_keys:
        lines.append(
            f"; no [[dkim.keys]] for {domain}: create one with"
            f" `mailstack dkim keygen {domain} SELECTOR`"
        )
    width = max(len(r.name) for r in found)
    for record in found:
        lines.extend(f"; {line}" for line in record.comment.splitlines())
        lines.append(f"{record.name:<{width}} {TTL} IN {record.rdtype:<4} {record.data}")
    return "\n".join(lines)
