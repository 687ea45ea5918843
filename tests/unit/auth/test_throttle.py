"""The PURE failed-login throttle, driven with explicit times."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from mailstack.auth.throttle import Throttle
from mailstack.config import AuthConfig

AUTH = AuthConfig(
    free_failures=3,
    delay_base_seconds=1.0,
    delay_max_seconds=30.0,
    lockout_failures=10,
    lockout_seconds=900.0,
    failure_window_seconds=3600.0,
)


def fail(
    throttle: Throttle,
    times: int,
    *,
    ip: str = "192.0.2.1",
    account: str = "a@x.test",
    now: float = 0.0,
) -> list[float]:
    delays = []
    for _ in range(times):
        throttle.record_failure(ip, account, now)
        delays.append(throttle.delay_for(ip, account, now))
    return delays


def test_free_failures_then_doubling_delay_capped() -> None:
    delays = fail(Throttle(dataclasses.replace(AUTH, lockout_failures=0)), 12)
    assert delays == [0, 0, 0, 1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_lockout_after_lockout_failures_for_lockout_seconds() -> None:
    throttle = Throttle(AUTH)
    fail(throttle, 9)
    assert not throttle.is_locked_out("192.0.2.1", "a@x.test", 0.0)
    fail(throttle, 1)
    assert throttle.is_locked_out("192.0.2.1", "a@x.test", 0.0)
    assert throttle.delay_for("192.0.2.1", "a@x.test", 0.0) == 30.0
    assert throttle.is_locked_out("192.0.2.1", "a@x.test", 899.9)
    assert not throttle.is_locked_out("192.0.2.1", "a@x.test", 900.0)
    # After the lockout, the counters start again.
    assert throttle.delay_for("192.0.2.1", "a@x.test", 900.0) == 0.0


def test_account_lockout_applies_from_every_address() -> None:
    throttle = Throttle(AUTH)
    for i in range(10):
        throttle.record_failure(f"198.51.100.{i}", "victim@x.test", float(i))
    assert throttle.is_locked_out("203.0.113.9", "victim@x.test", 10.0)
    assert throttle.is_locked_out("203.0.113.9", "VICTIM@X.TEST", 10.0)
    assert not throttle.is_locked_out("203.0.113.9", "other@x.test", 10.0)


def test_address_counter_spans_accounts() -> None:
    throttle = Throttle(AUTH)
    for i in range(5):
        throttle.record_failure("192.0.2.7", f"user{i}@x.test", 0.0)
    # The fifth failure from one address is delayed although each account failed once.
    assert throttle.delay_for("192.0.2.7", "user4@x.test", 0.0) == 2.0
    assert throttle.delay_for("192.0.2.8", "user4@x.test", 0.0) == 0.0


def test_failures_outside_the_window_are_forgotten() -> None:
    throttle = Throttle(AUTH)
    fail(throttle, 5, now=0.0)
    assert throttle.delay_for("192.0.2.1", "a@x.test", 3599.0) == 2.0
    assert throttle.delay_for("192.0.2.1", "a@x.test", 3600.0) == 0.0
    assert len(throttle) == 0


def test_success_clears_account_and_address_counters() -> None:
    throttle = Throttle(AUTH)
    fail(throttle, 6)
    throttle.record_success("192.0.2.1", "A@x.test")
    assert throttle.delay_for("192.0.2.1", "a@x.test", 0.0) == 0.0
    assert len(throttle) == 0


def test_memory_is_bounded_and_oldest_entries_go_first() -> None:
    throttle = Throttle(dataclasses.replace(AUTH, throttle_max_entries=10))
    for i in range(100):
        throttle.record_failure(f"10.0.0.{i}", f"u{i}@x.test", float(i))
    assert len(throttle) == 10
    # The most recent failures are still counted.
    fail(throttle, 3, ip="10.0.0.99", account="u99@x.test", now=100.0)
    assert throttle.delay_for("10.0.0.99", "u99@x.test", 100.0) == 1.0


@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1"]),
            st.sampled_from(["a@x.test", "b@x.test", "c@y.test"]),
            st.floats(min_value=0, max_value=100),
            st.booleans(),
        ),
        max_size=200,
    )
)
def test_invariants_under_random_traffic(events: list[tuple[str, str, float, bool]]) -> None:
    auth = dataclasses.replace(AUTH, throttle_max_entries=4)
    throttle = Throttle(auth)
    now = 0.0
    for ip, account, step, failed in events:
        now += step
        if failed:
            throttle.record_failure(ip, account, now)
        else:
            throttle.record_success(ip, account)
            assert not throttle.is_locked_out(ip, account, now)
            assert throttle.delay_for(ip, account, now) == 0.0
        delay = throttle.delay_for(ip, account, now)
        assert 0.0 <= delay <= auth.delay_max_seconds
        assert len(throttle) <= auth.throttle_max_entries


@given(st.integers(min_value=0, max_value=2000))
def test_huge_failure_counts_never_overflow(count: int) -> None:
    auth = AuthConfig(free_failures=0, lockout_failures=0, delay_max_seconds=1e300)
    throttle = Throttle(auth)
    fail(throttle, count)
    assert 0.0 <= throttle.delay_for("192.0.2.1", "a@x.test", 0.0) <= 1e300
