"""The `overview` scenario: the console overview's reads for an account with `--history` events (10
million by default) spread evenly over the 30 days before today and today, each with a delivery and an
attempt, as a busy account accumulates them: every window (1 h, 6 h, 24 h, 7 d) holds its share, and
nothing else writes meanwhile. The baseline is the same charts read raw, without the rolled-up slots,
in the same run. Target: every overview read under 100 ms (p99)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from bench.history import DAYS, _overview, _roll_up, log, store_days
from bench.report import Result, percentile
from dispatcher import partitions

if TYPE_CHECKING:
    from bench.scenarios import Env

TARGET_MS = 100.0


async def _account(env: Env) -> tuple[int, int]:
    """An account of its own, with one active callback, so the service's own rows are not in its windows."""
    conn = await env.pg.connect()
    try:
        account_id = await conn.fetchval("INSERT INTO accounts (name) VALUES ('overview') RETURNING id")
        callback_id = await conn.fetchval(
            "INSERT INTO callbacks (account_id, name, url, status) VALUES ($1, 'hook', 'https://example.com/h', 'active')"
            " RETURNING id",
            account_id,
        )
        return account_id, callback_id
    finally:
        await conn.close()


async def overview(env: Env) -> Result:
    account_id, callback_id = await _account(env)
    per_day = env.args.history // DAYS
    today = partitions.today()
    days = [today - timedelta(days=d) for d in range(DAYS, -1, -1)]  # today's rows after now stay out of windows
    log(f"storing {per_day * len(days):,} events with a delivery and an attempt each over {DAYS} days and today")
    taken = await store_days(env.pg.url, account_id, callback_id, days, per_day)
    rounds, seconds = await _roll_up(env)
    log(f"rolled up the charts' slots in {rounds} retention rounds, {seconds:.1f} s")
    timings = await _overview(env, account_id)
    for label, runs in timings.items():
        log(f"overview {label}: p50 {percentile(runs, 50):.1f} ms, p99 {percentile(runs, 99):.1f} ms")
    served = {label: runs for label, runs in timings.items() if not label.endswith(" raw")}
    worst = max(percentile(runs, 99) for runs in served.values())
    raw = [percentile(runs, 99) for label, runs in timings.items() if label.endswith(" raw")]
    result = Result("overview", per_day * DAYS, worst, "ms (slowest read, p99)", max(raw) if raw else None)
    result.p50_ms = max(percentile(runs, 50) for runs in served.values())
    result.p99_ms = worst
    result.target = f"every overview read p99 < {TARGET_MS:.0f} ms with the history stored"
    result.met = worst < TARGET_MS
    result.details = {"store_s": taken["insert"], "rollup_rounds": rounds, "rollup_s": seconds}
    for label, runs in timings.items():
        key = label.replace(" ", "_")
        result.details[key + "_p50_ms"], result.details[key + "_p99_ms"] = percentile(runs, 50), percentile(runs, 99)
    return result
