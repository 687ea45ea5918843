"""PURE failed-login bookkeeping, per client address and per account.

No clock is read here: every call takes ``now`` (seconds on any monotonic
clock), so the policy is tested without sleeping.  The caller (authenticator.py)
records a failure, then waits :meth:`Throttle.delay_for` before answering, and
refuses outright while :meth:`Throttle.is_locked_out`.

Two counters guard against two attacks: the address counter slows one client
guessing many accounts, the account counter slows many clients guessing one
password.  Memory is bounded by ``auth.throttle_max_entries``: the entries
touched least recently are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from mailstack.config import AuthConfig

# 2**60 seconds is already "capped"; larger exponents only risk float overflow.
_MAX_EXPONENT = 60


@dataclass(slots=True)
class _Entry:
    failures: deque[float]  # times of failures inside the window, oldest first
    locked_until: float = 0.0


class Throttle:
    def __init__(self, auth: AuthConfig) -> None:
        self._auth = auth
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # Counting beyond the lockout threshold (or beyond the point where the
        # delay is capped, when lockout is off) changes nothing: bound each entry.
        self._max_failures = auth.lockout_failures or auth.free_failures + _MAX_EXPONENT + 1

    @staticmethod
    def _keys(ip: str, account: str) -> tuple[str, str]:
        # Accounts are matched case-insensitively, as the store matches addresses.
        return f"ip:{ip}", f"account:{account.casefold()}"

    def _failures(self, key: str, now: float) -> int:
        """Failures of ``key`` inside the window (forgetting older ones)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0
        horizon = now - self._auth.failure_window_seconds
        while entry.failures and entry.failures[0] <= horizon:
            entry.failures.popleft()
        if not entry.failures and entry.locked_until <= now:
            del self._entries[key]
            return 0
        return len(entry.failures)

    def _locked(self, key: str, now: float) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.locked_until > now

    def is_locked_out(self, ip: str, account: str, now: float) -> bool:
        return any(self._locked(key, now) for key in self._keys(ip, account))

    def delay_for(self, ip: str, account: str, now: float) -> float:
        """Seconds to wait before answering the latest failure (0 when none is due)."""
        if self.is_locked_out(ip, account, now):
            return self._auth.delay_max_seconds
        count = max(self._failures(key, now) for key in self._keys(ip, account))
        excess = count - self._auth.free_failures
        if excess <= 0:
            return 0.0
        delay = self._auth.delay_base_seconds * 2.0 ** min(excess - 1, _MAX_EXPONENT)
        return min(delay, self._auth.delay_max_seconds)

    def record_failure(self, ip: str, account: str, now: float) -> None:
        for key in self._keys(ip, account):
            self._failures(key, now)  # drop failures that left the window
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(deque(maxlen=self._max_failures))
            self._entries.move_to_end(key)
            entry.failures.append(now)
            limit = self._auth.lockout_failures
            if limit and len(entry.failures) >= limit:
                # Locked: further attempts are refused without counting; after
                # the lockout the key starts again from zero failures.
                entry.locked_until = now + self._auth.lockout_seconds
                entry.failures.clear()
        while len(self._entries) > self._auth.throttle_max_entries:
            self._entries.popitem(last=False)

    def record_success(self, ip: str, account: str) -> None:
        """A correct password clears both counters (the client is not guessing)."""
        for key in self._keys(ip, account):
            self._entries.pop(key, None)

    def __len__(self) -> int:
        """Number of tracked addresses and accounts."""
        return len(self._entries)
