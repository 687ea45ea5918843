"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

Used by ``service.run`` for ``Type=notify`` units: READY=1 once every
listener is bound, STOPPING=1 when a stop begins, STATUS= for
``systemctl status``, and WATCHDOG=1 pings when the unit sets WatchdogSec=.
Outside systemd (no NOTIFY_SOCKET) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger("mailstack.systemd")


def _socket_address(value: str) -> str:
    # sd_notify(3): a leading "@" names a socket in the abstract namespace,
    # which the kernel spells with a leading NUL byte.
    return "\0" + value[1:] if value.startswith("@") else value


def notify(*assignments: str) -> bool:
    """Send ``VAR=value`` lines to the service manager; True if sent.

    Failure to notify is logged, never raised: a mail server must not stop
    because its supervisor's socket went away.
    """
    target = os.environ.get("NOTIFY_SOCKET", "")
    if not target or not assignments:
        return False
    message = "\n".join(assignments).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_socket_address(target))
            sock.sendall(message)
    except OSError as exc:
        logger.warning("sd_notify to %s failed: %s", target, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), or None.

    sd_watchdog_enabled(3): WATCHDOG_USEC applies only to the process named
    by WATCHDOG_PID when that is set.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2
