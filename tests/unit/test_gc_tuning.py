"""The collector settings the servers and the writer process take after startup."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mailstack import gc_tuning


@pytest.fixture
def restore_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_collector")
def test_startup_objects_are_frozen_and_young_collections_wait_longer() -> None:
    kept = [object(), {"kept": True}]
    middle, old = gc.get_threshold()[1:]
    gc_tuning.settle_after_startup()
    assert gc.get_freeze_count() > len(kept)
    assert gc.get_threshold() == (gc_tuning.YOUNG_THRESHOLD, middle, old)


@pytest.mark.usefixtures("restore_collector")
def test_cycles_made_after_startup_are_still_collected() -> None:
    gc_tuning.settle_after_startup()

    class Node:
        other: object = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second
    assert gc.collect() >= 2
