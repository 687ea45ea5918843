"""Front-end hosts as real ``mailstack serve`` processes sharing one database.

Used by tests/integration/test_scaleout.py and bench/scaleout_bench.py.
Each host gets its own config file and data_dir (as separate machines
would), the same database URL and the same TLS certificate, and listens on
127.0.0.1 port 0 (without a certificate each generates its own);
its ports are read from the ``listening: ...`` lines that
``mailstack serve`` prints once every listener is bound.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from mailstack.config import Config, DatabaseConfig
from mailstack.store import migrate
from mailstack.store.store import Store
from tests.integration.conftest import CHEAP_AUTH, create_accounts

SOURCE_ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"^listening: (\w+) (tcp|tls)://127\.0\.0\.1:(\d+)$")
START_SECONDS = 30.0
STOP_SECONDS = 15.0


@dataclass
class Host:
    name: str
    config_file: Path
    process: subprocess.Popen[str]
    ports: dict[str, int] = field(default_factory=dict)  # service -> plain port
    stderr_lines: list[str] = field(default_factory=list)

    def port(self, service: str) -> int:
        return self.ports[service]

    def log(self) -> str:
        return "".join(self.stderr_lines)


async def prepare_database(url: str, directory: Path) -> None:
    """Migrate ``url`` and create the integration tests' domain and accounts."""
    await trio.to_thread.run_sync(migrate.upgrade, url)
    config = Config(data_dir=str(directory), database=DatabaseConfig(url=url), auth=CHEAP_AUTH)
    store = await Store.open(config)
    try:
        await create_accounts(store, config)
    finally:
        await store.aclose()


def write_config(
    path: Path,
    *,
    name: str,
    database_url: str,
    cert_file: Path | None,
    key_file: Path | None,
    services: Sequence[str],
    database: dict[str, object] | None = None,
    log_level: str = "warning",
) -> None:
    """A host's TOML: plaintext listeners on loopback port 0 (logins allowed
    without TLS, so clients stay simple), cheap argon2, the shared database."""
    lines = [
        f"hostname = {json.dumps(f'{name}.example.test')}",
        f"data_dir = {json.dumps(str(path.parent / f'{name}-data'))}",
        "[database]",
        f"url = {json.dumps(database_url)}",
        *(f"{key} = {json.dumps(value)}" for key, value in (database or {}).items()),
        "[auth]",
        "argon2_time_cost = 1",
        "argon2_memory_kib = 1024",
        "argon2_parallelism = 1",
        "[logging]",
        f"level = {json.dumps(log_level)}",
    ]
    if cert_file and key_file:
        lines += ["[tls]", f"cert_file = {json.dumps(str(cert_file))}"]
        lines.append(f"key_file = {json.dumps(str(key_file))}")
    for service in services:
        lines += [f"[{service}]", 'listen = ["127.0.0.1:0"]']
        if service in ("imap", "pop3"):
            lines.append("allow_plaintext_login = true")
        if service == "smtp":  # no SPF/DKIM/DMARC lookups on the system's DNS
            lines.append("authentication_checks = false")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _drain(stream: object, sink: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.append(line)


def start_host(config_file: Path, name: str, services: Sequence[str]) -> Host:
    """Start ``mailstack serve`` and wait until every listener is bound."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mailstack", "--config", str(config_file), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=SOURCE_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    host = Host(name, config_file, process)
    assert process.stdout is not None and process.stderr is not None
    threading.Thread(target=_drain, args=(process.stderr, host.stderr_lines), daemon=True).start()
    ready = threading.Event()

    def read_ports() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = LISTENING.match(line.strip())
            if match and match.group(2) == "tcp":
                host.ports[match.group(1)] = int(match.group(3))
            if set(services) <= set(host.ports):
                ready.set()
        ready.set()  # the process ended

    threading.Thread(target=read_ports, daemon=True).start()
    if not ready.wait(START_SECONDS) or not set(services) <= set(host.ports):
        process.kill()
        process.wait()
        raise RuntimeError(f"host {name} did not start: {host.log()}")
    return host


def stop_host(host: Host) -> int:
    """SIGTERM (graceful stop); returns the exit status."""
    if host.process.poll() is None:
        host.process.send_signal(signal.SIGTERM)
        try:
            host.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            host.process.kill()
            host.process.wait()
    return host.process.returncode


@contextmanager
def running_hosts(
    directory: Path,
    count: int,
    *,
    database_url: str,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    services: Sequence[str] = ("smtp", "imap", "pop3"),
    database: dict[str, object] | None = None,
) -> Iterator[list[Host]]:
    """``count`` hosts (named a, b, ...) on one database; stopped on exit."""
    with ExitStack() as stack:
        hosts = []
        for index in range(count):
            name = "host" + "abcdefgh"[index]
            config_file = directory / f"{name}.toml"
            write_config(
                config_file,
                name=name,
                database_url=database_url,
                cert_file=cert_file,
                key_file=key_file,
                services=services,
                database=database,
            )
            host = start_host(config_file, name, services)
            stack.callback(stop_host, host)
            hosts.append(host)
        yield hosts
