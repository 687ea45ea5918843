"""COMPRESS=DEFLATE (RFC 4978): a trio stream that compresses what is sent
and inflates what is received, over a plain or TLS stream.

RFC 4978 3 (and RFC 1951): raw deflate without zlib header or checksum
(negative window bits).  Every ``send_all`` ends with a sync flush: the server
sends a whole batch of responses at once and the client must be able to
read all of it without waiting for more.
"""

from __future__ import annotations

import zlib

import trio

# Octets inflated per receive at most: a tiny compressed input can inflate to
# gigabytes, so output is drawn in bounded steps (the rest of the input waits
# in zlib's unconsumed_tail).
MAX_INFLATE = 65536
# What we send may use a smaller window than the 32 KiB a peer's inflater
# accepts (RFC 1951): a 4 KiB window and memLevel 5 keep the compressor's
# state at 32 KiB instead of 256 KiB per connection (mobile clients idle
# with COMPRESS on) for nearly the same ratio (18.0 against 18.4 on FETCH
# ENVELOPE responses).  What we receive needs the full window.
DEFLATE_WINDOW_BITS = 12
DEFLATE_MEM_LEVEL = 5


class DeflateStream(trio.abc.Stream):
    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -DEFLATE_WINDOW_BITS, DEFLATE_MEM_LEVEL)
        self._inflate = zlib.decompressobj(-15)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        out = self._deflate.compress(bytes(data)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        await self.inner.send_all(out)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Inflated octets; b"" at the end of the stream (or of the deflate data)."""
        limit = min(max_bytes or MAX_INFLATE, MAX_INFLATE)
        while True:
            pending = bytes(self._inflate.unconsumed_tail)
            if not pending:
                if self._inflate.eof:
                    return b""
                pending = bytes(await self.inner.receive_some(limit))
                if not pending:
                    return b""
            try:
                data = self._inflate.decompress(pending, limit)
            except zlib.error as exc:
                raise trio.BrokenResourceError(f"bad deflate data: {exc}") from exc
            if data:
                return data

    async def aclose(self) -> None:
        await self.inner.aclose()
