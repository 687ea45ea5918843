"""`mailstack dkim keygen` and `mailstack dns-records` (added to the
command line by cli.build_parser)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeVar

from mailstack.cli import CliError
from mailstack.config import Config
from mailstack.smtp import dkim_keys, dns_records

P = TypeVar("P", bound=argparse.ArgumentParser)


def default_key_path(config: Config, domain: str, selector: str) -> Path:
    return config.data_path / "dkim" / f"{domain}.{selector}.key"


def cmd_dkim_keygen(config: Config, args: argparse.Namespace) -> None:
    domain, selector = args.domain.lower().rstrip("."), args.selector.lower()
    path = Path(args.key_file) if args.key_file else default_key_path(config, domain, selector)
    path = path.resolve()
    if path.exists():
        raise CliError(f"{path} exists; delete it or choose another selector")
    try:
        pem = dkim_keys.generate(args.algorithm, args.bits)
        key = dkim_keys.parse(domain, selector, pem)
        if not args.key_file:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        dkim_keys.write_private(path, pem)
    except dkim_keys.UnusableKey as exc:
        raise CliError(str(exc)) from None
    kind = f"a {args.bits}-bit RSA" if args.algorithm == "rsa" else "an Ed25519"
    record = f"{key.record_name}. {dns_records.TTL} IN TXT {dns_records.quote_txt(key.record_text)}"
    print(f"wrote {kind} private key to {path} (mode 0600)")
    print()
    print("1. Publish its public key in the DNS zone of " + domain + ":")
    print(record)
    print()
    print("2. Add these lines to the configuration file (in place of a `keys = []` line")
    print("   under [dkim]), then restart mailstack:")
    print("[[dkim.keys]]")
    print(f'domain = "{domain}"')
    print(f'selector = "{selector}"')
    print(f'key_file = "{path}"')


def cmd_dns_records(config: Config, args: argparse.Namespace) -> None:
    domain = args.domain.lower().rstrip(".")
    keys = [k for k in dkim_keys.load(config) if k.domain == domain]
    found = dns_records.records(config, domain, keys, dmarc_policy=args.dmarc_policy)
    print(dns_records.zone_text(config, domain, found, bool(keys)))


def _bits(text: str) -> int:
    if not text.isdigit() or int(text) < dkim_keys.MIN_RSA_BITS:
        raise argparse.ArgumentTypeError(
            f"expected at least {dkim_keys.MIN_RSA_BITS}, got {text!r}"
        )
    return int(text)


def add_commands(commands: argparse._SubParsersAction[P]) -> None:
    dkim = commands.add_parser("dkim", help="DKIM signing keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = dkim.add_parser(
        "keygen",
        help="create a DKIM key and print its DNS record and config lines",
        description=(
            "Write a new private key (mode 0600; default DATA_DIR/dkim/DOMAIN.SELECTOR.key), "
            "then print the TXT record to publish and the [[dkim.keys]] lines to add. "
            "Run it as the user mailstack runs as, so the service can read the key."
        ),
    )
    p.add_argument("domain", metavar="DOMAIN", help="the From domain to sign for")
    p.add_argument("selector", metavar="SELECTOR", help="names the key in DNS, e.g. mail2026")
    p.add_argument(
        "--algorithm",
        choices=dkim_keys.ALGORITHMS,
        default="rsa",
        help="rsa (rsa-sha256, every receiver) or ed25519 (RFC 8463); default rsa",
    )
    p.add_argument(
        "--bits",
        type=_bits,
        default=dkim_keys.DEFAULT_RSA_BITS,
        help=f"RSA key size (default {dkim_keys.DEFAULT_RSA_BITS})",
    )
    p.add_argument("--key-file", metavar="FILE", help="where to write the key instead")
    p.set_defaults(func=cmd_dkim_keygen)

    p = commands.add_parser(
        "dns-records",
        help="print the DNS records a mail domain needs",
        description=(
            "Print, in zone-file syntax, the MX, SPF, DKIM (from [[dkim.keys]]), DMARC and "
            "RFC 6186 SRV records (from the configured listeners) for DOMAIN."
        ),
    )
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument(
        "--dmarc-policy",
        choices=dns_records.DMARC_POLICIES,
        default="quarantine",
        help="p= of the DMARC record (default quarantine; none only monitors)",
    )
    p.set_defaults(func=cmd_dns_records)
