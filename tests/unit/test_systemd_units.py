"""The systemd units under systemd/: parsed, checked for what the operator
relies on, and verified by systemd-analyze when it is installed."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from mailstack import net
from mailstack.cli import EXIT_CONFIG
from mailstack.config import ImapConfig, ServiceConfig

UNITS = Path(__file__).resolve().parents[2] / "systemd"
EXAMPLE_CONFIG = UNITS.parent / "etc" / "mailstack.toml"
EXECUTABLE = "/opt/mailstack/bin/mailstack"
CONFIG_ARGS = "--config /etc/mailstack/mailstack.toml"


def parse(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((UNITS / name).read_text(encoding="utf-8"), source=name)
    return parser


def test_service_template() -> None:
    unit = parse("mailstack@.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == f"{EXECUTABLE} {CONFIG_ARGS} serve %i"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["User"] == "mailstack"
    assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert service["RestartPreventExitStatus"] == str(EXIT_CONFIG)
    for key in ("StateDirectory", "ConfigurationDirectory", "LogsDirectory"):
        assert service[key] == "mailstack"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["MemoryDenyWriteExecute"] == "yes"
    # WATCHDOG=1 pings every WatchdogSec/2 (service._watchdog).
    assert int(service["WatchdogSec"]) >= 10
    assert unit["Unit"]["PartOf"] == "mailstack.target"
    assert "mailstack-db-upgrade.service" in unit["Unit"]["Requires"].split()
    assert "mailstack-db-upgrade.service" in unit["Unit"]["After"].split()
    assert unit["Install"]["WantedBy"] == "mailstack.target"


def test_grace_period_fits_in_stop_timeout() -> None:
    """The documented default grace must end before systemd SIGKILLs."""
    example = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    grace = example["service"]["shutdown_grace_seconds"]
    assert grace == ServiceConfig().shutdown_grace_seconds
    timeout = int(parse("mailstack@.service")["Service"]["TimeoutStopSec"])
    assert grace + net.CLOSE_SECONDS < timeout


def test_file_limit_fits_the_imap_connection_limit() -> None:
    limit = int(parse("mailstack@.service")["Service"]["LimitNOFILE"])
    assert limit >= 2 * ImapConfig().max_connections


def test_target_and_upgrade() -> None:
    target = parse("mailstack.target")
    assert target["Install"]["WantedBy"] == "multi-user.target"
    upgrade = parse("mailstack-db-upgrade.service")["Service"]
    assert upgrade["Type"] == "oneshot"
    assert upgrade["ExecStart"] == f"{EXECUTABLE} {CONFIG_ARGS} db upgrade"
    assert upgrade["User"] == "mailstack"


def test_sysusers_and_tmpfiles() -> None:
    sysusers = (UNITS / "sysusers.d" / "mailstack.conf").read_text().splitlines()
    entries = [line.split() for line in sysusers if line and not line.startswith("#")]
    assert entries[0][:3] == ["u", "mailstack", "-"]
    tmpfiles = (UNITS / "tmpfiles.d" / "mailstack.conf").read_text().splitlines()
    dirs = [line.split() for line in tmpfiles if line and not line.startswith("#")]
    assert ["d", "/etc/mailstack", "0750", "root", "mailstack", "-"] in dirs


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at an executable that does.
    true = shutil.which("true")
    assert true is not None
    for name in ("mailstack@.service", "mailstack.target", "mailstack-db-upgrade.service"):
        text = (UNITS / name).read_text().replace(EXECUTABLE, true)
        (tmp_path / name).write_text(text)
    (tmp_path / "mailstack@imap.service").symlink_to("mailstack@.service")
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            str(tmp_path / "mailstack@imap.service"),
            str(tmp_path / "mailstack.target"),
            str(tmp_path / "mailstack-db-upgrade.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mailstack" not in result.stderr, result.stderr


def exposure(unit: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_security_scores_ok(tmp_path: Path) -> None:
    """Exposure 4.0 or lower is what systemd-analyze calls "OK"."""
    true = shutil.which("true")
    assert true is not None
    for name in ("mailstack@.service", "mailstack-db-upgrade.service"):
        text = (UNITS / name).read_text().replace(EXECUTABLE, true)
        (tmp_path / name).write_text(text)
    (tmp_path / "mailstack@imap.service").symlink_to("mailstack@.service")
    assert exposure(tmp_path / "mailstack@imap.service") <= 4.0
    assert exposure(tmp_path / "mailstack-db-upgrade.service") <= 4.0
