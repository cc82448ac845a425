"""Retry delays and callback health transitions (dispatcher.delivery.policy), as plain tables."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.delivery.policy import Health, HealthRules, RetryPolicy, Window, after_attempts

SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
EXACT = RetryPolicy(SCHEDULE, jitter=0.0, retry_after_max=3600.0)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RULES = HealthRules(failing_after=5, disable_after=timedelta(days=5), probe_interval=timedelta(seconds=30))
ACTIVE = Health("active", 0, None)


# --- next_delay --------------------------------------------------------------------------


@pytest.mark.parametrize(("attempts", "expected"), [(n, SCHEDULE[n - 1]) for n in range(1, len(SCHEDULE) + 1)])
def test_next_delay_follows_the_schedule_entry_for_the_attempt_number(attempts: int, expected: float) -> None:
    assert EXACT.next_delay(attempts) == expected


@pytest.mark.parametrize("attempts", [len(SCHEDULE) + 1, len(SCHEDULE) + 2, 100])
def test_next_delay_is_none_once_the_schedule_is_exhausted(attempts: int) -> None:
    assert EXACT.next_delay(attempts) is None
    assert EXACT.next_delay(attempts, retry_after=60.0) is None


def test_empty_schedule_never_retries() -> None:
    assert RetryPolicy(()).next_delay(1, rng=random.Random(0)) is None


@pytest.mark.parametrize("jitter", [0.1, 0.2, 0.5])
@pytest.mark.parametrize("attempts", range(1, len(SCHEDULE) + 1))
def test_jitter_stays_within_plus_or_minus_the_fraction(jitter: float, attempts: int) -> None:
    policy = RetryPolicy(SCHEDULE, jitter=jitter)
    base = SCHEDULE[attempts - 1]
    delays = [policy.next_delay(attempts, rng=random.Random(seed)) for seed in range(200)]
    for d in delays:
        assert d is not None
        assert base * (1 - jitter) <= d <= base * (1 + jitter)
    assert len(set(delays)) > 1  # it does vary


def test_jitter_spreads_delays_both_below_and_above_the_schedule() -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.2)
    delays = [policy.next_delay(2, rng=random.Random(seed)) for seed in range(200)]
    assert any(d is not None and d < 300.0 for d in delays)
    assert any(d is not None and d > 300.0 for d in delays)


def test_jitter_is_deterministic_for_a_seeded_rng() -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.2)
    assert policy.next_delay(3, rng=random.Random(42)) == policy.next_delay(3, rng=random.Random(42))


def test_zero_jitter_gives_the_exact_schedule_without_consuming_the_rng() -> None:
    rng = random.Random(7)
    state = rng.getstate()
    assert EXACT.next_delay(2, rng=rng) == 300.0
    assert rng.getstate() == state


@pytest.mark.parametrize(
    ("attempts", "retry_after", "expected"),
    [
        (1, None, 5.0),  # no header: schedule
        (1, 0.0, 5.0),  # zero: schedule
        (1, 2.0, 5.0),  # smaller than the schedule: schedule wins
        (1, 5.0, 5.0),  # equal
        (1, 120.0, 120.0),  # larger: honoured
        (2, 1000.0, 1000.0),
        (1, 3600.0, 3600.0),  # exactly the bound
        (1, 3601.0, 3600.0),  # beyond the bound: bounded
        (1, 1e9, 3600.0),
        (1, float("inf"), 3600.0),
        (4, 1e9, 7200.0),  # schedule already above the bound: schedule
        (4, 100.0, 7200.0),
    ],
)
def test_retry_after_larger_than_schedule_is_honoured_up_to_the_bound(
    attempts: int, retry_after: float | None, expected: float
) -> None:
    assert EXACT.next_delay(attempts, retry_after=retry_after) == expected


@pytest.mark.parametrize("seed", range(50))
def test_retry_after_above_the_jittered_delay_is_used_exactly(seed: int) -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.2, retry_after_max=3600.0)
    assert policy.next_delay(1, retry_after=600.0, rng=random.Random(seed)) == 600.0


@pytest.mark.parametrize("seed", range(50))
def test_retry_after_below_the_jittered_delay_leaves_the_jittered_delay(seed: int) -> None:
    policy = RetryPolicy(SCHEDULE, jitter=0.2)
    expected = policy.next_delay(2, rng=random.Random(seed))
    assert policy.next_delay(2, retry_after=1.0, rng=random.Random(seed)) == expected


def test_custom_retry_after_bound_is_respected() -> None:
    policy = RetryPolicy((1.0,), jitter=0.0, retry_after_max=10.0)
    assert policy.next_delay(1, retry_after=60.0) == 10.0


def test_delay_is_never_negative() -> None:
    policy = RetryPolicy((-5.0,), jitter=0.0)
    assert policy.next_delay(1) == 0.0


# --- after_attempts: transitions -------------------------------------------------------------

T0 = NOW - timedelta(hours=1)


def flush(h: Health, **kw) -> Health:
    kw.setdefault("successes", 0)
    kw.setdefault("failures", 0)
    kw.setdefault("last_ok", False)
    return after_attempts(h, RULES, NOW, **kw)


@pytest.mark.parametrize(
    ("before", "failures", "expected_status", "expected_streak"),
    [
        (ACTIVE, 1, "active", 1),
        (ACTIVE, 4, "active", 4),
        (ACTIVE, 5, "failing", 5),
        (ACTIVE, 9, "failing", 9),
        (Health("active", 3, T0), 1, "active", 4),
        (Health("active", 4, T0), 1, "failing", 5),
        (Health("active", 4, T0), 3, "failing", 7),
        (Health("failing", 6, T0), 1, "failing", 7),
    ],
)
def test_consecutive_failures_accumulate_and_mark_failing_at_the_threshold(
    before: Health, failures: int, expected_status: str, expected_streak: int
) -> None:
    after = flush(before, failures=failures, first_failure_at=T0)
    assert after.status == expected_status
    assert after.consecutive_failures == expected_streak
    assert after.disabled_reason is None


def test_first_failure_records_when_failing_started() -> None:
    first = NOW - timedelta(seconds=20)
    after = flush(ACTIVE, failures=2, first_failure_at=first)
    assert after.failing_since == first


def test_first_failure_without_a_timestamp_uses_now() -> None:
    assert flush(ACTIVE, failures=1).failing_since == NOW


def test_failing_since_is_kept_across_flushes_without_success() -> None:
    before = Health("active", 2, T0)
    after = flush(before, failures=1, first_failure_at=NOW - timedelta(seconds=1))
    assert after.failing_since == T0


def test_failing_callback_is_paced_by_the_probe_interval() -> None:
    after = flush(ACTIVE, failures=5, first_failure_at=T0)
    assert after.status == "failing"
    assert after.paused_until == NOW + RULES.probe_interval


def test_still_failing_callback_gets_a_new_probe_time() -> None:
    before = Health("failing", 8, T0, paused_until=NOW - timedelta(seconds=1))
    after = flush(before, failures=1)
    assert after.paused_until == NOW + RULES.probe_interval


@pytest.mark.parametrize(
    ("pause_until", "expected"),
    [
        (NOW + timedelta(seconds=10), NOW + timedelta(seconds=30)),  # probe is later: probe
        (NOW + timedelta(seconds=600), NOW + timedelta(seconds=600)),  # Retry-After is later: Retry-After
        (None, NOW + timedelta(seconds=30)),
    ],
)
def test_failing_pause_is_the_later_of_probe_and_retry_after(pause_until: datetime | None, expected: datetime) -> None:
    after = flush(Health("failing", 6, T0), failures=1, pause_until=pause_until)
    assert after.paused_until == expected


@pytest.mark.parametrize("pause_until", [None, NOW + timedelta(seconds=120)])
def test_active_callback_below_threshold_is_paused_only_by_retry_after(pause_until: datetime | None) -> None:
    after = flush(ACTIVE, failures=1, pause_until=pause_until)
    assert after.status == "active"
    assert after.paused_until == pause_until


@pytest.mark.parametrize(
    "before",
    [
        Health("failing", 12, T0, paused_until=NOW + timedelta(seconds=30)),
        Health("active", 3, T0),
        ACTIVE,
    ],
)
@pytest.mark.parametrize("successes", [1, 3])
def test_success_restores_active_and_clears_failure_bookkeeping(before: Health, successes: int) -> None:
    after = flush(before, successes=successes, failures=0, last_ok=True)
    assert after == Health("active", 0, None, None, None)


def test_success_keeps_a_retry_after_pause() -> None:
    until = NOW + timedelta(seconds=90)
    after = flush(Health("failing", 6, T0), successes=1, last_ok=True, pause_until=until)
    assert after == Health("active", 0, None, until, None)


def test_failures_after_a_success_in_the_same_flush_restart_the_streak() -> None:
    first = NOW - timedelta(seconds=5)
    after = flush(Health("active", 4, T0), successes=1, failures=2, first_failure_at=first)
    assert after.status == "active"
    assert after.consecutive_failures == 2
    assert after.failing_since == first


def test_failing_callback_with_success_then_few_failures_is_no_longer_failing() -> None:
    first = NOW - timedelta(seconds=5)
    after = flush(Health("failing", 9, T0), successes=1, failures=1, first_failure_at=first)
    assert after.consecutive_failures == 1
    assert after.failing_since == first
    assert after.status == "active"


@pytest.mark.parametrize(
    ("failing_for", "expected_status"),
    [
        (timedelta(days=5) - timedelta(seconds=1), "failing"),
        (timedelta(days=5), "disabled"),
        (timedelta(days=6), "disabled"),
    ],
)
def test_continuous_failure_for_disable_after_disables(failing_for: timedelta, expected_status: str) -> None:
    since = NOW - failing_for
    after = flush(Health("failing", 40, since), failures=1)
    assert after.status == expected_status
    if expected_status == "disabled":
        assert after.disabled_reason == "failing continuously"
        assert after.failing_since == since
        assert after.consecutive_failures == 41


def test_disable_clock_restarts_after_a_success_in_the_flush() -> None:
    old = NOW - timedelta(days=10)
    first = NOW - timedelta(seconds=1)
    after = flush(Health("failing", 40, old), successes=1, failures=1, first_failure_at=first)
    assert after.status != "disabled"
    assert after.failing_since == first


@pytest.mark.parametrize(
    "before",
    [ACTIVE, Health("active", 2, T0), Health("failing", 9, T0, paused_until=NOW + timedelta(seconds=30))],
)
@pytest.mark.parametrize("last_ok", [False, True])
def test_410_gone_disables_immediately(before: Health, last_ok: bool) -> None:
    after = flush(before, successes=int(last_ok), failures=1 - int(last_ok), last_ok=last_ok, gone=True)
    assert after.status == "disabled"
    assert after.disabled_reason == "receiver answered 410 Gone"


@pytest.mark.parametrize(
    "before",
    [
        Health("disabled", 7, T0, disabled_reason="failing continuously"),
        Health("disabled", 0, None, disabled_reason="disabled by the account"),
        Health("pending_verification", 0, None),
    ],
)
@pytest.mark.parametrize(
    "outcome",
    [
        {"successes": 1, "failures": 0, "last_ok": True},
        {"successes": 0, "failures": 50, "last_ok": False},
        {"successes": 0, "failures": 1, "last_ok": False, "gone": True},
    ],
)
def test_disabled_or_pending_callback_is_left_untouched(before: Health, outcome: dict) -> None:
    after = after_attempts(
        before,
        RULES,
        NOW,
        first_failure_at=NOW - timedelta(days=30),
        pause_until=NOW + timedelta(hours=1),
        **outcome,
    )
    assert after is before


# --- Window (requests in flight per callback) ------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "limit", "slow"),
    [
        ("", 1.0, False),  # a callback starts with one request in flight
        ("ok ok ok", 4.0, False),  # one more per answer: it doubles each round
        ("ok " * 20, 10.0, False),  # up to the ceiling
        ("timeout", 1.0, True),  # never below one
        ("ok ok ok ok ok ok ok timeout", 4.0, True),  # each timeout halves it
        ("ok ok ok ok ok ok ok timeout timeout timeout", 1.0, True),
        ("ok ok ok 500", 4.0, False),  # an answered failure holds no slot long: unchanged
        ("ok ok ok timeout 500", 2.0, True),
        ("ok ok ok timeout ok", 3.0, False),  # an answer ends the slow spell and grows it again
    ],
)
def test_window_grows_by_one_per_answer_and_halves_per_timeout(answers: str, limit: float, slow: bool) -> None:
    w = Window()
    for a in answers.split():
        w = w.after(10, ok=a == "ok", timed_out=a == "timeout")
    assert (w.limit, w.slow) == (limit, slow)


@pytest.mark.parametrize(
    ("window", "share"), [(Window(), 4), (Window(3.5), 12), (Window(3.5, slow=True), 3), (Window(1.0, True), 1)]
)
def test_a_slow_callback_is_handed_one_round_at_a_time(window: Window, share: int) -> None:
    assert window.share(4) == share
