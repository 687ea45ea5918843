"""The machine-readable result rows every bench writes with ``--json FILE``.

A bench run with ``--json FILE`` writes a JSON list of rows, one per figure:

    {"bench": "smtp", "metric": "deliveries/s, 1 KiB, 10 clients",
     "mailstack": 812.0, "peers": {"aiosmtpd": 1650.0, "postfix": null},
     "better": "higher"}

``mailstack`` and each peer's value come from the same run; a peer that was
not installed is absent or null.  ``better`` says which way is good
("higher" or "lower").  ``bench/run_all.py`` runs every ``bench/*_bench.py``
with ``--json`` and prints all rows as one table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def row(
    bench: str,
    metric: str,
    mailstack: float | None,
    peers: dict[str, float | None] | None = None,
    *,
    better: str = "higher",
) -> Row:
    return {
        "bench": bench,
        "metric": metric,
        "mailstack": mailstack,
        "peers": peers or {},
        "better": better,
    }


def write(path: str | Path | None, rows: list[Row]) -> None:
    """Write ``rows`` to ``path`` (nothing when no --json was given)."""
    if path:
        Path(path).write_text(json.dumps(rows, indent=2) + "\n")
