"""Progress of a long import or export, and its final summary.

On a terminal a tqdm bar shows messages, bytes and rates; otherwise (a log,
a pipe, cron) a plain line is printed every ``interval`` seconds.  Per-message
errors go to stderr as they happen, so a skipped file is never only counted.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import NoReturn, TextIO

from tqdm import tqdm

MIB = 1024 * 1024
PLAIN_INTERVAL = 10.0


@dataclass
class Summary:
    verb: str  # "imported" / "exported"
    messages: int = 0
    bytes: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    # What to do after an interruption (imports resume; exports start over).
    resume_hint: str = "run the same command again to continue"
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-6)

    def line(self) -> str:
        seconds = self.elapsed()
        text = (
            f"{self.verb} {self.messages} messages ({self.bytes / MIB:.1f} MiB) in {seconds:.1f} s"
            f" ({self.messages / seconds:.0f} messages/s, {self.bytes / MIB / seconds:.1f} MiB/s);"
            f" {self.duplicates} duplicates skipped; {len(self.errors)} errors"
        )
        if self.interrupted:
            text += f"; interrupted: {self.resume_hint}"
        return text


class Progress:
    def __init__(
        self,
        verb: str,
        *,
        total: int | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
        interactive: bool | None = None,
        interval: float = PLAIN_INTERVAL,
    ) -> None:
        self.summary = Summary(verb)
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        if interactive is None:
            interactive = self._out.isatty()
        self._bar: tqdm[NoReturn] | None = None
        if interactive:
            self._bar = tqdm(total=total, unit="msg", file=self._out, dynamic_ncols=True)
        self._interval = interval
        self._last_line = time.monotonic()
        self._folder = ""

    def set_total(self, total: int) -> None:
        """The message count, once known (the bar then shows a percentage)."""
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def folder(self, name: str) -> None:
        self._folder = name
        if self._bar is not None:
            self._bar.set_description(name[-30:], refresh=False)

    def add(self, messages: int, size: int) -> None:
        self.summary.messages += messages
        self.summary.bytes += size
        self._show(messages)

    def duplicates(self, count: int) -> None:
        self.summary.duplicates += count
        self._show(count)

    def error(self, label: str, reason: str, *, skipped: bool = True) -> None:
        """A message or folder left out (``skipped``), or something it lost."""
        line = f"skipped {label}: {reason}" if skipped else f"{label}: {reason}"
        self.summary.errors.append(line)
        if self._bar is not None:
            self._bar.write(line, file=self._err)
        else:
            print(line, file=self._err, flush=True)
        self._show(1)

    def _show(self, advanced: int) -> None:
        s = self.summary
        if self._bar is not None:
            rate = s.bytes / MIB / s.elapsed()
            self._bar.set_postfix_str(
                f"{s.bytes / MIB:.1f} MiB, {rate:.1f} MiB/s, "
                f"{s.duplicates} dup, {len(s.errors)} err",
                refresh=False,
            )
            self._bar.update(advanced)
            return
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._last_line = now
            print(f"{s.line()} [{self._folder}]", file=self._out, flush=True)

    def close(self) -> Summary:
        if self._bar is not None:
            self._bar.close()
        print(self.summary.line(), file=self._out, flush=True)
        return self.summary
