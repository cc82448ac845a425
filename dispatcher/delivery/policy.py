"""Pure decisions about failure: when to try again, and what a callback's health becomes.

No I/O here, so every rule is tested with plain tables (tests/unit/test_policy.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    schedule: tuple[float, ...]
    jitter: float = 0.2
    retry_after_max: float = 3600.0

    def next_delay(
        self, attempts: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds until the next try after `attempts` failed ones, or None when the schedule is exhausted.
        A receiver's Retry-After is honoured (bounded) when it asks for more than the schedule."""
        if attempts > len(self.schedule):
            return None
        delay = self.schedule[attempts - 1]
        if self.jitter:
            delay *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return max(delay, 0.0)


@dataclass(frozen=True)
class Health:
    """What the worker tracks about a callback between attempts."""

    status: str  # active | failing | disabled (pending_verification never reaches the worker)
    consecutive_failures: int
    failing_since: datetime | None
    paused_until: datetime | None = None
    disabled_reason: str | None = None


@dataclass(frozen=True)
class HealthRules:
    failing_after: int
    disable_after: timedelta
    probe_interval: timedelta


def after_attempts(
    h: Health,
    rules: HealthRules,
    now: datetime,
    *,
    successes: int,
    failures: int,
    last_ok: bool,
    gone: bool = False,
    first_failure_at: datetime | None = None,
    pause_until: datetime | None = None,
) -> Health:
    """The callback's health after a flush of attempt outcomes (oldest first, `last_ok` is the newest)."""
    if h.status not in ("active", "failing"):
        return h  # disabled by someone else meanwhile; a re-enable comes only from PATCH
    if gone:
        return replace(h, status="disabled", disabled_reason="receiver answered 410 Gone")
    if last_ok:
        return Health("active", 0, None, pause_until)
    streak = h.consecutive_failures + failures if not successes else failures
    since = h.failing_since if (h.failing_since and not successes) else (first_failure_at or now)
    if now - since >= rules.disable_after:
        return Health("disabled", streak, since, pause_until, "failing continuously")
    status = "failing" if streak >= rules.failing_after else ("active" if successes else h.status)
    paused = pause_until
    if status == "failing":
        probe_at = now + rules.probe_interval
        paused = max(paused, probe_at) if paused else probe_at
    return Health(status, streak, since, paused)


@dataclass(frozen=True)
class Window:
    """How many requests one worker may have in flight to a callback: what the callback has recently been
    able to take (AIMD). It starts at one and grows by one per success, so a receiver that keeps up
    doubles it each round, up to the configured ceiling; each timeout halves it (never below one).
    Failures the receiver answered quickly leave it as it is: they do not hold a slot for long. While
    its latest request timed out the callback is `slow`, and claims hand it one round at a time."""

    limit: float = 1.0
    slow: bool = False

    def after(self, ceiling: int, *, ok: bool, timed_out: bool) -> Window:
        if timed_out:
            return Window(max(1.0, self.limit / 2), True)
        if ok and (self.slow or self.limit != ceiling):
            return Window(min(float(ceiling), self.limit + 1), False)
        return self  # unchanged: at its ceiling, or a failure answered quickly

    @property
    def slots(self) -> int:
        return int(self.limit)

    def share(self, rounds: int) -> int:
        """Jobs a worker may hold for the callback: `rounds` rounds of its slots, or one while it is slow."""
        return self.slots * (1 if self.slow else rounds)
