"""Subprocess used by the multi-process store tests.

    python -m tests.unit.store.deliver_worker URL DATA_DIR ACCOUNT_ID COUNT [--hang]

Delivers COUNT messages to ACCOUNT_ID (10 at a time, through group commit),
printing each UID as soon as its deliver() call returned; with --hang it then
sleeps until killed (the durability test SIGKILLs it).
"""

from __future__ import annotations

import sys

import trio

from mailstack.config import Config, DatabaseConfig
from mailstack.store.store import open_store


async def main(argv: list[str]) -> None:
    url, data_dir, account_id, count = argv[0], argv[1], int(argv[2]), int(argv[3])
    config = Config(data_dir=data_dir, database=DatabaseConfig(url=url))
    async with open_store(config) as store:
        limiter = trio.CapacityLimiter(10)

        async def one(i: int) -> None:
            async with limiter:
                raw = f"Subject: worker {i}\r\n\r\nbody {i}\r\n".encode()
                [stored] = await store.deliver([account_id], raw)
            print(stored.uid, flush=True)

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
        if "--hang" in argv:
            await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
