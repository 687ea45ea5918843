"""SIGKILL the real server at random moments; nothing acknowledged may be lost.

Runs with the rest of the suite (20 kills, under a minute) and alone as
``pytest tests/crash``.  Longer runs on demand:
``MAILSTACK_CRASH_KILLS=500 MAILSTACK_CRASH_SEED=7 pytest tests/crash -s``.
See ``harness.py`` for what is checked after every kill.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.crash.harness import run_campaign

KILLS = int(os.environ.get("MAILSTACK_CRASH_KILLS", "20"))
# The same with [database] writer_process = true (a shorter campaign in CI).
WRITER_PROCESS_KILLS = int(os.environ.get("MAILSTACK_CRASH_KILLS_WRITER_PROCESS", "10"))
SEED = int(os.environ.get("MAILSTACK_CRASH_SEED", "11"))

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


@pytest.mark.parametrize(
    ("writer_process", "kills"),
    [(False, KILLS), (True, WRITER_PROCESS_KILLS)],
    ids=["thread_writer", "writer_process"],
)
def test_acknowledged_mail_survives_sigkill(
    tmp_path: Path, writer_process: bool, kills: int
) -> None:
    report = run_campaign(
        tmp_path, seed=SEED, kills=kills, writer_process=writer_process, log=print
    )
    print(report.summary())
    assert not report.problems, f"seed {SEED}, after kill {report.kills}: " + "; ".join(
        report.problems[:10]
    )
    assert report.kills == kills
    # The workload must have exercised something for the verdict to mean anything.
    assert report.acked_verified > kills
    assert report.deletions_verified > 0
