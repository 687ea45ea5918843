"""argon2id hashing with configured parameters."""

from __future__ import annotations

from mailstack.auth.passwords import PasswordHasher, dummy_hash
from mailstack.config import AuthConfig

CHEAP = AuthConfig(argon2_time_cost=1, argon2_memory_kib=64, argon2_parallelism=1)


def test_hash_is_argon2id_with_configured_parameters() -> None:
    hashed = PasswordHasher(CHEAP).hash("correct horse")
    assert hashed.startswith("$argon2id$")
    assert "m=64,t=1,p=1" in hashed


def test_verify_accepts_right_and_rejects_wrong_password() -> None:
    hasher = PasswordHasher(CHEAP)
    hashed = hasher.hash("correct horse")
    assert hasher.verify(hashed, "correct horse")
    assert not hasher.verify(hashed, "Correct horse")
    assert not hasher.verify(hashed, "")


def test_non_ascii_password_round_trips() -> None:
    hasher = PasswordHasher(CHEAP)
    hashed = hasher.hash("pässwörd✓")
    assert hasher.verify(hashed, "pässwörd✓")
    assert not hasher.verify(hashed, "passwords")


def test_each_hash_has_its_own_salt() -> None:
    hasher = PasswordHasher(CHEAP)
    assert hasher.hash("same") != hasher.hash("same")


def test_malformed_hash_never_verifies_and_needs_rehash() -> None:
    hasher = PasswordHasher(CHEAP)
    for bad in ("", "not a hash", "$argon2id$v=19$m=64,t=1,p=1$broken"):
        assert not hasher.verify(bad, "anything")
        assert hasher.needs_rehash(bad)


def test_needs_rehash_when_parameters_change() -> None:
    old = PasswordHasher(CHEAP)
    hashed = old.hash("pw")
    assert not old.needs_rehash(hashed)
    stronger = PasswordHasher(
        AuthConfig(argon2_time_cost=2, argon2_memory_kib=64, argon2_parallelism=1)
    )
    assert stronger.needs_rehash(hashed)
    # An old hash still verifies under new parameters (so it can be rehashed).
    assert stronger.verify(hashed, "pw")


def test_dummy_hash_uses_configured_parameters_and_is_cached() -> None:
    hasher = PasswordHasher(CHEAP)
    assert hasher.dummy_hash is dummy_hash(CHEAP)
    assert not hasher.needs_rehash(hasher.dummy_hash)
    assert not hasher.verify(hasher.dummy_hash, "")
    other = AuthConfig(argon2_time_cost=2, argon2_memory_kib=64, argon2_parallelism=1)
    assert "t=2" in dummy_hash(other)
