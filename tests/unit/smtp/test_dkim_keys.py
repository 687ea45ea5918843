"""DKIM keys: generation, loading from [[dkim.keys]] with one-line errors,
the TXT record, and the config validation of the key tables."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailstack.config import ConfigError, parse_config
from mailstack.smtp import dkim_keys
from mailstack.smtp.dkim_signing import DkimSigner, signed_fields


def key_table(path: Path, domain: str = "example.test", selector: str = "s1") -> str:
    return f'[[dkim.keys]]\ndomain = "{domain}"\nselector = "{selector}"\nkey_file = "{path}"\n'


def test_generated_keys_and_records(tmp_path: Path) -> None:
    for algorithm, public_bytes in (("rsa", None), ("ed25519", 32)):
        path = tmp_path / f"{algorithm}.key"
        dkim_keys.write_private(path, dkim_keys.generate(algorithm, 1024))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        config = parse_config(key_table(path, "Example.TEST", "S1"), "t.toml")
        (key,) = dkim_keys.load(config)
        assert (key.domain, key.selector, key.algorithm) == ("example.test", "s1", algorithm)
        assert key.record_name == "s1._domainkey.example.test"
        assert key.record_text.startswith(f"v=DKIM1; k={algorithm}; p=")
        if public_bytes:  # RFC 8463 4.2: the bare 32-byte key
            assert len(base64.b64decode(key.public)) == public_bytes
        with pytest.raises(FileExistsError):  # never overwrite a published key
            dkim_keys.write_private(path, b"")


def test_unusable_key_files_are_config_errors(tmp_path: Path) -> None:
    cases = {
        "not an unencrypted PEM private key": b"hello",
        "not an RSA or Ed25519 key": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }
    for needle, pem in cases.items():
        path = tmp_path / "bad.key"
        path.write_bytes(pem)
        config = parse_config(key_table(path), "t.toml")
        with pytest.raises(ConfigError, match=r"^t\.toml: dkim\.keys\[0\]\.key_file: ") as info:
            dkim_keys.load(config)
        assert needle in str(info.value)
    with pytest.raises(dkim_keys.UnusableKey, match="at least 1024"):
        dkim_keys.generate("rsa", 512)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[[dkim.keys]]\ndomain = "example.test"\nselector = "s"\n', "key_file", "required"),
        ('[[dkim.keys]]\nselector = "s"\nkey_file = "KEY"\n', "domain", "required"),
        ('[[dkim.keys]]\ndomain = "a b"\nselector = "s"\nkey_file = "KEY"\n', "domain", "not a"),
        ('[[dkim.keys]]\ndomain = "x.test"\nselector = "s;"\nkey_file = "KEY"\n', "selector", ""),
        ('[[dkim.keys]]\ndomain = "x.test"\nselector = "s"\nkey_file = "/nope"\n', "key_file", ""),
        ('[[dkim.keys]]\ndomain = "x.test"\nalgorithm = "rsa"\n', "algorithm", "unknown key"),
        ("[dkim]\nkeys = [1]\n", "", "expected a table"),
    ],
)
def test_key_table_errors(tmp_path: Path, text: str, key: str, problem: str) -> None:
    key_file = tmp_path / "k.key"
    key_file.write_bytes(b"x")
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace("KEY", str(key_file)), "t.toml")
    assert f"dkim.keys[0]{'.' + key if key else ''}: " in str(info.value)
    assert problem in str(info.value)


def test_duplicate_selector_and_policy_values(tmp_path: Path) -> None:
    key_file = tmp_path / "k.key"
    key_file.write_bytes(b"x")
    twice = key_table(key_file) + key_table(key_file, selector="S1")
    with pytest.raises(ConfigError, match=r"dkim\.keys\[1\]\.selector: .*listed twice"):
        parse_config(twice, "t.toml")
    with pytest.raises(ConfigError, match=r"smtp\.spf_fail: must be one of mark, reject"):
        parse_config('[smtp]\nspf_fail = "drop"\n', "t.toml")
    with pytest.raises(ConfigError, match=r"smtp\.dmarc_reject: must be one of honour, mark"):
        parse_config('[smtp]\ndmarc_reject = "ignore"\n', "t.toml")


def test_signer_picks_keys_by_from_domain_and_oversigns() -> None:
    key = dkim_keys.parse("example.test", "s1", dkim_keys.generate("ed25519"))
    signer = DkimSigner([key])
    message = b"From: a@EXAMPLE.test\r\nSubject: s\r\nReceived: x\r\n\r\nbody\r\n"
    signed = signer.sign(message, "a@example.test")
    assert signed.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
    assert signer.sign(message.replace(b"EXAMPLE.test", b"other.test"), "a@other.test") == b""
    # Only for the envelope sender's own (organizational) domain.
    assert signer.sign(message, "b@lists.example.test") != b""
    assert signer.sign(message, "a@other.test") == b""
    assert signer.keys_for(message, "a@other.test") == []
    assert signer.has_keys("example.test") and not signer.has_keys(None)
    fields = signed_fields(message)
    assert fields.count(b"from") == 2 and fields.count(b"subject") == 2
    assert b"received" not in fields  # RFC 6376 5.4.1: never trace fields


def test_mailstack_check_names_each_unusable_key(tmp_path: Path) -> None:
    from mailstack.check import dkim_problems

    good, bad = tmp_path / "good.key", tmp_path / "bad.key"
    good.write_bytes(dkim_keys.generate("ed25519"))
    bad.write_bytes(b"junk")
    config = parse_config(key_table(good) + key_table(bad, selector="s2"), "t.toml")
    (problem,) = dkim_problems(config)
    assert problem.subject == "dkim.keys[1].key_file"
    assert "not an unencrypted PEM private key" in problem.message
