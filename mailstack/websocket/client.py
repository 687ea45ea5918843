"""``mailstack watch ADDRESS``: a client of the WebSocket API (trio-websocket's
client) that prints a line for each new message as it arrives.

The URL defaults to the first ``[websocket] listen`` address of the config
(``wss://`` when that section names a certificate); ``--json`` prints every
event as the server sent it.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

from mailstack.config import Config
from mailstack.websocket.protocol import basic_authorization

DEFAULT_URL = "ws://127.0.0.1:8025/"


class WatchError(Exception):
    """Why watching stopped; ``str()`` is the line shown to the user."""


def default_url(config: Config) -> str:
    ws = config.websocket
    if not ws.listen:
        return DEFAULT_URL
    endpoint = ws.listen[0]
    host = "127.0.0.1" if endpoint.host in ("0.0.0.0", "") else endpoint.host
    host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
    return f"{'wss' if ws.cert_file else 'ws'}://{host}:{endpoint.port}/"


def describe(event: dict[str, Any]) -> str:
    """One line for a ``message.new`` event."""
    to = ", ".join(event.get("to") or []) or "-"
    return (
        f"{event.get('received', '')}  {event.get('mailbox')} uid {event.get('uid')}  "
        f"from {event.get('from') or '-'}  to {to}  "
        f"{json.dumps(event.get('subject') or '', ensure_ascii=False)}  ({event.get('size')} bytes)"
    )


async def watch(
    url: str,
    user: str,
    password: str,
    *,
    ssl_context: ssl.SSLContext | None,
    show: Callable[[str], None],
    raw_json: bool = False,
) -> None:
    """Print events until the server closes the connection (or Ctrl-C)."""
    try:
        async with open_websocket_url(
            url,
            ssl_context=ssl_context,
            extra_headers=[basic_authorization(user, password)],
        ) as ws:
            while True:
                text = await ws.get_message()
                event = json.loads(text)
                if raw_json:
                    show(text if isinstance(text, str) else text.decode())
                elif event.get("event") == "hello":
                    show(
                        f"watching {event.get('account')} (protocol version {event.get('version')})"
                    )
                elif event.get("event") == "message.new":
                    show(describe(event))
                elif event.get("event") == "resync":
                    show("(fell behind: some events were skipped)")
    except ConnectionRejected as exc:
        if exc.status_code == 401:
            raise WatchError(f"{url}: authentication failed for {user}") from None
        raise WatchError(f"{url}: the server refused the connection ({exc.status_code})") from None
    except ConnectionClosed as exc:
        reason = exc.reason
        detail = f"{reason.code} {reason.reason or reason.name}" if reason else "closed"
        raise WatchError(f"{url}: connection closed ({detail})") from None
    except (HandshakeError, OSError, trio.BrokenResourceError) as exc:
        # trio-websocket's HandshakeError says why in its cause.
        why = str(exc) or str(exc.__cause__ or "") or type(exc).__name__
        raise WatchError(f"{url}: cannot connect: {why}") from None
