"""Progress output: a tqdm bar on terminals, periodic plain lines otherwise."""

from __future__ import annotations

import io

from mailstack.transfer.progress import Progress


def test_plain_lines_and_summary() -> None:
    out, err = io.StringIO(), io.StringIO()
    progress = Progress("imported", out=out, err=err, interactive=False, interval=0)
    progress.folder("Work")
    progress.add(3, 3 * 1024 * 1024)
    progress.duplicates(2)
    progress.error("/m/cur/1:2,S", "empty file")
    summary = progress.close()
    assert (summary.messages, summary.bytes, summary.duplicates) == (3, 3 * 1024 * 1024, 2)
    assert err.getvalue() == "skipped /m/cur/1:2,S: empty file\n"
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("imported 3 messages (3.0 MiB)") and lines[0].endswith("[Work]")
    assert "2 duplicates skipped; 1 errors" in lines[-1]
    assert "interrupted" not in lines[-1]


def test_quiet_between_intervals_and_interrupted_summary() -> None:
    out = io.StringIO()
    progress = Progress("exported", out=out, err=io.StringIO(), interactive=False, interval=3600)
    progress.add(1, 10)
    progress.summary.interrupted = True
    progress.close()
    (line,) = out.getvalue().splitlines()
    assert line.startswith("exported 1 messages")
    assert line.endswith("interrupted: run the same command again to continue")


def test_terminal_bar() -> None:
    out, err = io.StringIO(), io.StringIO()
    progress = Progress("imported", out=out, err=err, interactive=True)
    progress.set_total(10)
    progress.folder("INBOX")
    progress.add(4, 2 * 1024 * 1024)
    progress.error("x", "bad")
    progress.close()
    text = out.getvalue()
    assert "INBOX" in text and "/10" in text and "MiB" in text
    assert "skipped x: bad" in err.getvalue()
    assert text.rstrip().splitlines()[-1].startswith("imported 4 messages")
