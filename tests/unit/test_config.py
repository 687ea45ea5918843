"""Config loading: defaults, the documented example, and one-line errors."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

import pytest

from mailstack.config import (
    SECTIONS,
    Config,
    ConfigError,
    Endpoint,
    check_data_dir,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "mailstack.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailstack.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return info.value


# -- the documented example ------------------------------------------------


def test_example_documents_every_key() -> None:
    table = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    top_level = {f.name for f in dataclasses.fields(Config)} - {"source"} - set(SECTIONS)
    assert top_level <= set(table), f"undocumented: {top_level - set(table)}"
    for section, cls in SECTIONS.items():
        assert section in table, f"[{section}] missing from {EXAMPLE}"
        missing = {f.name for f in dataclasses.fields(cls)} - set(table[section])
        assert not missing, f"[{section}] keys missing from {EXAMPLE}: {sorted(missing)}"


def test_every_example_key_has_a_comment() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            before = lines[number - 1].lstrip()
            commented = "#" in line or before.startswith("#") or "=" in before
            assert commented, f"line {number + 1} has no comment: {line}"


def test_example_is_a_valid_config(tmp_path: Path) -> None:
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert.write_text("cert")
    key.write_text("key")
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("/etc/mailstack/tls/fullchain.pem", str(cert))
    text = text.replace("/etc/mailstack/tls/privkey.pem", str(key))
    config = parse_config(text, str(EXAMPLE))
    assert config.hostname == "mail.example.test"
    assert config.smtp.listen == (Endpoint("0.0.0.0", 25),)
    assert config.submission.tls_listen == (Endpoint("0.0.0.0", 465),)
    assert config.imap.tls_listen == (Endpoint("0.0.0.0", 993),)
    assert config.pop3.listen == (Endpoint("0.0.0.0", 110),)
    assert config.database_url == "sqlite:////var/lib/mailstack/mailstack.db"
    # The example documents the defaults for everything but the deployment details.
    assert config.auth == Config().auth
    assert config.imap.idle_timeout_seconds == 1800.0


# -- defaults and where the file comes from ---------------------------------


def test_defaults_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILSTACK_CONFIG", raising=False)
    config = load_config(None)
    assert config == Config()
    assert config.smtp.listen == ()
    assert config.smtp.max_recipients >= 100  # RFC 5321 4.5.3.1.8
    assert config.imap.idle_timeout_seconds >= 1800  # RFC 9051 5.4
    assert config.pop3.idle_timeout_seconds >= 600  # RFC 1939 3
    assert config.database_url.startswith("sqlite:///")
    assert config.database_url.endswith("/mailstack-data/mailstack.db")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert load_config(path) == Config(source=str(path))


def test_mailstack_config_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'hostname = "env.example.test"\n')
    monkeypatch.setenv("MAILSTACK_CONFIG", str(path))
    assert load_config(None).hostname == "env.example.test"
    # An explicit --config wins over the environment.
    other = tmp_path / "other.toml"
    other.write_text('hostname = "flag.example.test"\n')
    assert load_config(other).hostname == "flag.example.test"


def test_database_url_from_data_dir(tmp_path: Path) -> None:
    config = parse_config(f'data_dir = "{tmp_path}"\n')
    assert config.database_url == f"sqlite:///{tmp_path}/mailstack.db"
    config = parse_config('[database]\nurl = "postgresql+psycopg://u@h/db"\n')
    assert config.database_url == "postgresql+psycopg://u@h/db"


def test_values_are_converted(tmp_path: Path) -> None:
    config = parse_config(
        "[imap]\n"
        'listen = ["[::1]:143", "127.0.0.1:0"]\n'
        "idle_timeout_seconds = 3600\n"
        "allow_plaintext_login = true\n"
    )
    assert config.imap.listen == (Endpoint("::1", 143), Endpoint("127.0.0.1", 0))
    assert str(config.imap.listen[0]) == "[::1]:143"
    assert isinstance(config.imap.idle_timeout_seconds, float)
    assert config.imap.allow_plaintext_login is True


def test_writer_process_is_off_unless_asked_for() -> None:
    assert parse_config("").database.writer_process is False
    assert parse_config("[database]\nwriter_process = true\n").database.writer_process is True


# -- errors: one line naming file, key and problem ------------------------------


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("hostnme = 'x'\n", "hostnme", "unknown key"),
        ("[smtp]\nlisten_on = []\n", "smtp.listen_on", "unknown key"),
        ("[imap4]\nlisten = []\n", "imap4", "unknown key"),
        ("[smtp]\nmax_recipients = '100'\n", "smtp.max_recipients", "expected an integer"),
        ("[smtp]\nmax_recipients = true\n", "smtp.max_recipients", "expected an integer"),
        ("[smtp]\nmax_recipients = 1.5\n", "smtp.max_recipients", "expected an integer"),
        ("[smtp]\nmax_errors = -1\n", "smtp.max_errors", "must not be negative"),
        ("[imap]\nallow_plaintext_login = 1\n", "imap.allow_plaintext_login", "true or false"),
        ("[pop3]\nidle_timeout_seconds = 'soon'\n", "pop3.idle_timeout_seconds", "a number"),
        ("hostname = 5\n", "hostname", "expected a string"),
        ("smtp = 5\n", "smtp", "expected a table"),
        ("[smtp]\nlisten = '0.0.0.0:25'\n", "smtp.listen", "expected a list"),
        ("[smtp]\nlisten = [25]\n", "smtp.listen[0]", "host:port"),
        ("[smtp]\nlisten = ['localhost']\n", "smtp.listen[0]", "is not host:port"),
        ("[smtp]\nlisten = ['localhost:smtp']\n", "smtp.listen[0]", "is not host:port"),
        ("[smtp]\nlisten = [':25']\n", "smtp.listen[0]", "is not host:port"),
        ("[imap]\ntls_listen = ['a:1', 'b:65536']\n", "imap.tls_listen[1]", "out of range"),
        ("hostname = 'two words'\n", "hostname", "not a host name"),
        ("[logging]\nlevel = 'loud'\n", "logging.level", "must be one of"),
        ("[smtp]\nmax_recipients = 0\n", "smtp.max_recipients", "at least 1"),
        ("[submission]\nover_quota = 'bounce'\n", "submission.over_quota", "must be one of"),
        ("[database]\npool_size = 0\n", "database.pool_size", "at least 1"),
        ("[database]\nwriter_process = 'yes'\n", "database.writer_process", "true or false"),
        ("[auth]\nargon2_time_cost = 0\n", "auth.argon2_time_cost", "at least 1"),
        ("[auth]\nargon2_memory_kib = 16\n", "auth.argon2_memory_kib", "8 * argon2_parallelism"),
        ("[auth]\nmax_concurrent_hashes = 0\n", "auth.max_concurrent_hashes", "at least 1"),
        ("[auth]\nlockout_failures = 2\n", "auth.lockout_failures", "more than free_failures"),
        ("[auth]\nthrottle_max_entries = 0\n", "auth.throttle_max_entries", "at least 1"),
        ("[outbound]\nport = 0\n", "outbound.port", "between 1 and 65535"),
        ("[outbound]\nsmarthost = 'relay'\n", "outbound.smarthost", "is not host:port"),
        ("[outbound]\nsmarthost_tls = 'tls'\n", "outbound.smarthost_tls", "must be one of"),
        ("[outbound]\nsmarthost_username = 'u'\n", "outbound", "given together"),
        ("[outbound]\ntls_ca_file = '/nonexistent'\n", "outbound.tls_ca_file", "not readable"),
        ("[outbound]\nlease_seconds = 0\n", "outbound.lease_seconds", "greater than 0"),
        ("[outbound]\nmax_hops = 0\n", "outbound.max_hops", "at least 1"),
        (
            "[outbound]\nretry_initial_seconds = 60\nretry_max_seconds = 10\n",
            "outbound.retry_max_seconds",
            "not be less than",
        ),
    ],
)
def test_error_names_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    error = error_for(tmp_path, text)
    assert error.key == key
    assert problem in error.problem
    assert f": {key}: " in str(error)


def test_bad_toml(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[smtp\nlisten = []\n")
    assert "not valid TOML" in str(error)
    assert "line 1" in str(error)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: config file not found"):
        load_config(tmp_path / "missing.toml")


def test_missing_cert_file(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("key")
    text = f'[tls]\ncert_file = "{tmp_path}/nope.pem"\nkey_file = "{key}"\n'
    error = error_for(tmp_path, text)
    assert error.key == "tls.cert_file"
    assert error.problem == f"file not found: {tmp_path}/nope.pem"


def test_cert_without_key(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("cert")
    error = error_for(tmp_path, f'[tls]\ncert_file = "{cert}"\n')
    assert error.key == "tls"
    assert "cert_file and key_file must be given together" in str(error)


def test_websocket_cert_without_key(tmp_path: Path) -> None:
    error = error_for(tmp_path, '[websocket]\nkey_file = "/x/key.pem"\n')
    assert error.key == "websocket"


def test_check_data_dir_creates_the_directory(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path / "a" / "b"))
    check_data_dir(config)
    assert (tmp_path / "a" / "b").is_dir()


def test_check_data_dir_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = Config(data_dir=str(blocker / "data"), source="/etc/mailstack.toml")
    with pytest.raises(ConfigError) as info:
        check_data_dir(config)
    assert str(info.value).startswith("/etc/mailstack.toml: data_dir: cannot create")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_data_dir_not_writable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="data_dir: not writable"):
        check_data_dir(Config(data_dir=str(locked)))
