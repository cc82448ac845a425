"""`ingest-filtered`: ingest with 10 subscriptions that each have a payload filter against the same 10 without,
in the same run. The filters match every event, so both phases write the same fan-out rows (10 per event) and
differ only by the filters PostgreSQL evaluates inside the fan-out."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from bench import workload
from bench.report import Result

if TYPE_CHECKING:
    from bench.scenarios import Env

SUBSCRIPTIONS = 10


def _filter(i: int) -> dict[str, Any]:
    """A different filter per subscription, each using several operators, all matching bench events."""
    return {
        "type": {"$in": ["sent", "delivered", f"other{i}"]},
        "data.orderId": {"$gte": 0, "$lt": 10**9},
        "$or": [{"definitionKey": "order-confirmation"}, {"data.subject": {"$exists": True}}],
        "recipient": {"$nin": [f"nobody{i}@example.com"]},
    }


async def _round(env: Env, n: int, prefix: str) -> float:
    items = [workload.event(i, prefix) for i in range(n)]
    t0 = time.monotonic()
    await workload.post_events(env.api, items, batch=100, clients=8)
    return n / (time.monotonic() - t0)


async def _set_filters(env: Env, subs: list[str], filtered: bool) -> None:
    for i, sub in enumerate(subs):
        await env.api.call("PATCH", f"/v1/subscriptions/{sub}", {"filters": _filter(i) if filtered else {}})


async def ingest_filtered(env: Env) -> Result:
    n = env.args.events or 20000
    cbs = [await workload.register_callback(env.api, env.receiver, f"f{i}") for i in range(SUBSCRIPTIONS)]
    # Disabled: fan-out rows are written, the worker delivers none of them while ingest is measured.
    await workload.set_status(env.api, cbs, "disabled")
    subs = [s["subscriptionId"] for s in (await env.api.call("GET", "/v1/subscriptions"))["subscriptions"]]
    print(f"bench: {SUBSCRIPTIONS} subscriptions; a warm-up round, then unfiltered and filtered rounds of {n}"
          " events alternately, twice", file=sys.stderr, flush=True)  # fmt: skip
    await _round(env, min(n, 5000), "warm")
    rates: dict[bool, list[float]] = {False: [], True: []}
    for rnd in range(2):
        for filtered in (False, True):
            await _set_filters(env, subs, filtered)
            rates[filtered].append(await _round(env, n, f"r{rnd}{int(filtered)}"))
    conn = await env.pg.connect()
    try:
        stored = await conn.fetchval("SELECT count(*) FROM queue")
    finally:
        await conn.close()
    expected = SUBSCRIPTIONS * (min(n, 5000) + 4 * n)
    assert stored == expected, f"expected {expected} fan-out rows, found {stored}"
    filtered_rate, plain_rate = sum(rates[True]) / 2, sum(rates[False]) / 2
    result = Result("ingest-filtered", n, filtered_rate, "events/s", plain_rate, target="ratio >= 0.8")
    result.met = (result.ratio or 0) >= 0.8
    result.details = {
        "unfiltered": ", ".join(f"{r:,.0f}" for r in rates[False]),
        "filtered": ", ".join(f"{r:,.0f}" for r in rates[True]),
    }
    return result
