"""Long fuzz runs: ``python -m fuzz.run TARGET [--runs N | --seconds S]``.

TARGET is one of smtp, imap, pop3, sasl, mime (see ``fuzz/targets.py``).
With atheris installed (``pip install atheris``; wheels exist for CPython
3.11) the run is coverage-guided libFuzzer: it starts from
``fuzz/corpus/TARGET``, adds the inputs that reach new code to a working
corpus in ``fuzz/work/TARGET`` (not checked in), and writes a crashing input
to ``fuzz/work/crash-*``.  Without atheris (or with ``--hypothesis``) it
replays the corpus and then feeds hypothesis-generated inputs.  Either way it
ends by printing how many inputs were run.  A crash found: copy its input
into ``fuzz/corpus/TARGET`` (the CI tests replay that folder), fix the core.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

NAMES = ("imap", "mime", "pop3", "sasl", "smtp")
# atheris 2.3's bytecode instrumentation miscompiles some functions on
# CPython 3.11 (mailstack.imap.grammar.quoted and mailstack.mime.split_header
# then fail with AttributeError on valid input), so only these modules get
# coverage hooks; the imap and mime targets run uninstrumented under atheris.
INSTRUMENTED = ["mailstack.smtp", "mailstack.pop3", "mailstack.auth", "mailstack.wire"]


def load_targets(instrument: bool) -> dict[str, Callable[[bytes], None]]:
    """The targets; with atheris, the modules above get coverage hooks."""
    if not instrument:
        from fuzz.targets import TARGETS

        return TARGETS
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        from fuzz.targets import TARGETS
    return TARGETS


class Counted:
    def __init__(self, target: Callable[[bytes], None]) -> None:
        self.target = target
        self.count = 0

    def __call__(self, data: bytes) -> None:
        self.count += 1
        self.target(data)


def replay_corpus(name: str, target: Counted) -> None:
    for seed in sorted((HERE / "corpus" / name).iterdir()):
        target(seed.read_bytes())


def run_atheris(name: str, target: Counted, runs: int, seconds: int) -> None:
    import atheris

    work = HERE / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    args = [
        sys.argv[0],
        str(work),
        str(HERE / "corpus" / name),
        f"-artifact_prefix={HERE / 'work'}/crash-{name}-",
        f"-max_total_time={seconds}",
        "-max_len=4096",
        "-print_final_stats=1",
    ]
    if runs:
        args.append(f"-runs={runs}")
    atheris.Setup(args, target)
    # libFuzzer prints "Done N runs" and exits the process itself.
    atheris.Fuzz()


def run_hypothesis(name: str, target: Counted, runs: int, seconds: int) -> None:
    """Rounds of 1,000 fresh inputs (arbitrary bytes, then command-shaped)
    until ``runs`` inputs or ``seconds`` have passed."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from fuzz.inputs import shaped

    deadline = time.monotonic() + seconds
    strategies = (st.binary(max_size=4096), shaped(name))
    round_number = 0
    while time.monotonic() < deadline and (not runs or target.count < runs):

        @settings(
            max_examples=1000,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(strategies[round_number % 2])
        def fuzz(data: bytes) -> None:
            target(data)

        fuzz()
        round_number += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=NAMES)
    parser.add_argument("--runs", type=int, default=0, help="stop after N inputs")
    parser.add_argument("--seconds", type=int, default=60, help="stop after S seconds")
    parser.add_argument("--hypothesis", action="store_true", help="do not use atheris")
    args = parser.parse_args()
    try:
        import atheris  # noqa: F401
    except ImportError:
        args.hypothesis = True
    target = Counted(load_targets(not args.hypothesis)[args.target])
    replay_corpus(args.target, target)
    if args.hypothesis:
        run_hypothesis(args.target, target, args.runs, args.seconds)
        print(f"{args.target}: {target.count} inputs run, no failure")
    else:
        run_atheris(args.target, target, args.runs, args.seconds)


if __name__ == "__main__":
    main()
