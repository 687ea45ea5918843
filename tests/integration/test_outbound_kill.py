"""A real ``mailstack serve queue`` process, killed with SIGKILL in the
middle of a delivery and started again: every recipient is delivered
exactly once.

The submission service runs in the test; the queue runs in a subprocess on
the same SQLite store (as a separate systemd unit would).  The message goes
to carol@a.test and dave@b.test, one connection per domain, both to the
scripted MX of tests/support/smtp_stub.py: a.test is answered at once (and
its result committed), b.test's data reply never comes.  Killed there, the
process holds a lease on dave; the restarted process takes it over once it
runs out and delivers dave, and does not send carol's copy again.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio

from mailstack.store.records import RecipientState
from tests.support.dns_server import serve_dns
from tests.support.smtp_stub import SmtpStub

from .conftest import Stack, StackFactory
from .test_outbound_queue import message, submit, until, wait_until_queue_empty, zone_for

LEASE_SECONDS = 1.0


def queue_config(stack: Stack, dns_port: int, mx_port: int, path: Path) -> Path:
    config = stack.config
    path.write_text(
        f"""
hostname = "{config.hostname}"
data_dir = "{config.data_dir}"
[database]
url = "{config.database_url}"
[tls]
cert_file = "{config.tls.cert_file}"
key_file = "{config.tls.key_file}"
[dns]
nameservers = ["127.0.0.1:{dns_port}"]
[outbound]
enabled = true
port = {mx_port}
lease_seconds = {LEASE_SECONDS}
poll_seconds = 0.2
retry_initial_seconds = 0.2
retry_max_seconds = 0.5
""",
        encoding="utf-8",
    )
    return path


async def start_queue(config_file: Path, log: Path) -> trio.Process:
    with log.open("ab") as output:
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", "mailstack", "--config", str(config_file), "serve", "queue"],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def recipient_states(stack: Stack) -> dict[str, RecipientState]:
    return {r.address: r.state for m in await stack.store.list_queue() for r in m.recipients}


async def carol_delivered(stack: Stack) -> bool:
    return (await recipient_states(stack)).get("carol@a.test") is RecipientState.DELIVERED


async def test_sigkill_mid_delivery_then_restart_delivers_each_once(
    stack_factory: StackFactory, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            dns = await nursery.start(serve_dns, zone_for("a.test", "b.test"))
            stub = SmtpStub(stall=trio.Event(), stall_recipient="dave@b.test")
            mx_port = await nursery.start(stub.serve)
            stack = await stack_factory(
                services=["submission"],
                submission={"allow_plaintext_auth_on_loopback": True},
                outbound={"enabled": True},
            )
            config_file = queue_config(stack, dns.port, mx_port, tmp_path / "queue.toml")
            log = tmp_path / "queue.log"
            to = ["carol@a.test", "dave@b.test"]
            await submit(stack, message(to), to)

            first = await start_queue(config_file, log)
            try:
                await stub.stalled.wait()
                await until(lambda: carol_delivered(stack))
            finally:
                first.send_signal(signal.SIGKILL)
                await first.wait()
            assert first.returncode == -signal.SIGKILL
            states = await recipient_states(stack)
            assert states == {
                "carol@a.test": RecipientState.DELIVERED,
                "dave@b.test": RecipientState.QUEUED,
            }

            second = await start_queue(config_file, log)
            try:
                await wait_until_queue_empty(stack)
                await trio.sleep(LEASE_SECONDS + 0.5)  # room for a wrong second delivery
            finally:
                second.send_signal(signal.SIGTERM)
                with trio.move_on_after(10):
                    await second.wait()
                if second.returncode is None:
                    second.kill()
                    await second.wait()
            assert second.returncode == 0, log.read_text()
            delivered = sorted(r for _, recipients, _ in stub.accepted for r in recipients)
            assert delivered == ["carol@a.test", "dave@b.test"], log.read_text()
            nursery.cancel_scope.cancel()
