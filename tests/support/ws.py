"""A small test client of the WebSocket API on trio-websocket's client."""

from __future__ import annotations

import itertools
import json
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket

from mailstack.websocket.protocol import basic_authorization


class WsClient:
    """Requests get their reply by id; events that arrive meanwhile are kept
    in order for :meth:`event`."""

    def __init__(self, ws: WebSocketConnection, hello: dict[str, Any]) -> None:
        self.ws = ws
        self.hello = hello
        self.events: deque[dict[str, Any]] = deque()
        self.replies: dict[Any, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    async def _receive(self) -> dict[str, Any]:
        message = json.loads(await self.ws.get_message())
        assert isinstance(message, dict)
        return message

    async def send(self, payload: dict[str, Any] | str) -> None:
        await self.ws.send_message(payload if isinstance(payload, str) else json.dumps(payload))

    async def reply(self, request_id: Any) -> dict[str, Any]:
        while request_id not in self.replies:
            message = await self._receive()
            if "event" in message:
                self.events.append(message)
            else:
                self.replies[message["id"]] = message
        return self.replies.pop(request_id)

    async def request(self, kind: str, **params: Any) -> dict[str, Any]:
        """The whole reply object (``ok`` and ``result`` or ``error``)."""
        request_id = next(self._ids)
        await self.send({"id": request_id, "type": kind, **params})
        return await self.reply(request_id)

    async def result(self, kind: str, **params: Any) -> Any:
        reply = await self.request(kind, **params)
        assert reply["ok"], reply
        return reply["result"]

    async def event(self, kind: str | None = None) -> dict[str, Any]:
        """The next event (of ``kind``), skipping others."""
        while True:
            while self.events:
                event = self.events.popleft()
                if kind is None or event["event"] == kind:
                    return event
            message = await self._receive()
            if "event" in message:
                self.events.append(message)
            else:
                self.replies[message["id"]] = message


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WsClient]:
    async with open_websocket(
        host,
        port,
        "/",
        use_ssl=ssl_context or False,
        extra_headers=[basic_authorization(user, password)],
    ) as ws:
        with trio.fail_after(10):
            hello = json.loads(await ws.get_message())
        assert hello["event"] == "hello", hello
        yield WsClient(ws, hello)
