"""Property tests over every parser a remote peer reaches (bounded for CI).

Each target in ``fuzz/targets.py`` must answer or raise its core's protocol
error for any input; these tests feed it arbitrary bytes and command-shaped
lines built from the protocol's words.  ``fuzz/run.py`` runs the same targets
for as long as you like; its seed corpus runs here too, so a checked-in crash
input stays a regression test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.inputs import shaped
from fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"
# Five targets x two strategies x EXAMPLES inputs stay well under 30 s on CI.
EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_arbitrary_bytes(name: str) -> None:
    @FUZZ
    @given(st.binary(max_size=400))
    def run(data: bytes) -> None:
        TARGETS[name](data)

    run()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_command_shaped_input(name: str) -> None:
    @FUZZ
    @given(shaped(name))
    def run(data: bytes) -> None:
        TARGETS[name](data)

    run()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seed_corpus(name: str) -> None:
    seeds = sorted((CORPUS / name).iterdir())
    assert seeds, f"no seed corpus for {name}"
    for seed in seeds:
        TARGETS[name](seed.read_bytes())
