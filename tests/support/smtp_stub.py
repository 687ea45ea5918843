"""A small but real SMTP server (trio) to play a remote MX in queue tests.

It speaks enough RFC 5321 for an MTA client (EHLO with PIPELINING, SIZE,
8BITMIME, SMTPUTF8, no STARTTLS; MAIL, RCPT, DATA, RSET, NOOP, QUIT) and
lets a test script the reply to the end of the data per transaction:

    stub = SmtpStub(data_replies=["451 4.3.0 try later"])   # then 250s
    port = await nursery.start(stub.serve)
    ... stub.accepted  # [(sender, [recipients], content)] answered 250

``stall`` (a trio.Event) makes the next transaction (for ``stall_recipient``
if set) wait before its data reply until the event is set (a remote that is
slow, for killing a client mid-delivery); ``stalled`` is set once a
transaction waits there.  A client that goes away only ends its session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import trio

from mailstack.wire import ReceiveBuffer

Handler = Callable[[str, list[str], bytes], Awaitable[None]]


@dataclass
class SmtpStub:
    hostname: str = "stub.test"
    greeting: str = "220 stub.test ESMTP stub"
    data_replies: list[str] = field(default_factory=list)
    extensions: tuple[str, ...] = ("PIPELINING", "SIZE 10000000", "8BITMIME", "SMTPUTF8")
    # Recipients refused at RCPT with this reply.
    refuse: dict[str, str] = field(default_factory=dict)
    stall: trio.Event | None = None
    stall_recipient: str = ""
    stalled: trio.Event = field(default_factory=trio.Event)
    # Awaited after a message was accepted (250 already sent).
    on_accept: Handler | None = None
    accepted: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    transactions: int = 0
    connections: int = 0

    async def has_accepted(self) -> bool:
        return bool(self.accepted)

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.serve_listeners, self._session, listeners))
            task_status.started(port)

    async def _session(self, stream: trio.SocketStream) -> None:
        try:
            await self._converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _converse(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = ReceiveBuffer()

        async def line() -> bytes | None:
            while True:
                got = buffer.next_line(1_000_000)
                if got is not None:
                    return got
                data = await stream.receive_some(65536)
                if not data:
                    return None
                buffer.feed(data)

        async def reply(text: str) -> None:
            await stream.send_all(text.encode() + b"\r\n")

        async with stream:
            await reply(self.greeting)
            if not self.greeting.startswith("220"):
                # RFC 5321 3.1: after a 554 greeting only QUIT is answered.
                await line()
                await reply("221 bye")
                return
            sender, recipients = "", []
            while True:
                raw = await line()
                if raw is None:
                    return
                command = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb = command[:4].upper()
                if verb == "EHLO":
                    lines = [self.hostname, *self.extensions]
                    text = "\r\n".join(
                        f"250{'-' if i < len(lines) - 1 else ' '}{item}"
                        for i, item in enumerate(lines)
                    )
                    await reply(text)
                elif verb == "HELO" or verb == "NOOP":
                    await reply("250 ok")
                elif verb == "MAIL":
                    sender = command.partition("<")[2].partition(">")[0]
                    recipients = []
                    await reply("250 2.1.0 ok")
                elif verb == "RCPT":
                    address = command.partition("<")[2].partition(">")[0]
                    if address in self.refuse:
                        await reply(self.refuse[address])
                    else:
                        recipients.append(address)
                        await reply("250 2.1.5 ok")
                elif verb == "DATA":
                    if not recipients:
                        await reply("554 5.5.1 no valid recipients")
                        continue
                    await reply("354 go ahead")
                    content = b""
                    while True:
                        data_line = await line()
                        if data_line is None:
                            return
                        if data_line == b".\r\n":
                            break
                        content += data_line[1:] if data_line.startswith(b".") else data_line
                    self.transactions += 1
                    wanted = not self.stall_recipient or self.stall_recipient in recipients
                    if self.stall is not None and wanted:
                        stall, self.stall = self.stall, None
                        self.stalled.set()
                        await stall.wait()
                    answer = self.data_replies.pop(0) if self.data_replies else "250 2.0.0 ok"
                    if answer.startswith("250"):
                        self.accepted.append((sender, list(recipients), content))
                    await reply(answer)
                    if answer.startswith("250") and self.on_accept is not None:
                        await self.on_accept(sender, list(recipients), content)
                elif verb == "RSET":
                    sender, recipients = "", []
                    await reply("250 ok")
                elif verb == "QUIT":
                    await reply("221 bye")
                    return
                else:
                    await reply("502 5.5.1 not implemented")
