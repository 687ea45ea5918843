"""The POP3 maildrop lock with real flocks: in one process and across two."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from mailstack.pop3.locks import MaildropLocks


async def test_one_holder_per_account(tmp_path: Path) -> None:
    first = MaildropLocks(tmp_path / "locks")
    second = MaildropLocks(tmp_path / "locks")  # another service in the process
    assert await first.acquire(1)
    assert not await first.acquire(1)
    assert not await second.acquire(1)
    assert await second.acquire(2)  # other accounts are independent
    await first.release(1)
    await first.release(1)  # releasing twice is harmless
    assert await second.acquire(1)


def test_lock_excludes_another_process_and_dies_with_it(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from pathlib import Path
                import trio
                from mailstack.pop3.locks import MaildropLocks
                locks = MaildropLocks(Path({str(directory)!r}))
                assert trio.run(locks.acquire, 7)
                print("locked", flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[3],
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        locks = MaildropLocks(directory)
        assert not trio.run(locks.acquire, 7)
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    assert trio.run(locks.acquire, 7)  # the kernel dropped the dead process's lock
