"""`deliver-ordered`: `deliver` to a callback with `ordering: "messageKey"` against the same callback unordered,
in the same run. The N events belong to 1,000 messageKeys (5 each at the default 5,000), recorded in per-message
order and interleaved across messages as real traffic is: every message's first event, then every message's
second, and so on, each layer shuffled and posted only after the one before it was answered, so a message's
event ids follow its order. Both kinds of round deliver the same events; only the callback's ordering differs
(PATCHed between rounds while the queue is empty). The receiver checks every event of an ordered round against
the last one of its message (data.seq) and the run fails on any arrival out of order."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from bench import workload
from bench.report import Result
from bench.workload import Callback

if TYPE_CHECKING:
    from bench.scenarios import Env

KEYS = 1000
TYPES = ("sent", "delivered", "opened", "clicked", "opened")  # a message's events in order (more: repeats)


def _layers(n: int, prefix: str) -> list[list[dict[str, Any]]]:
    """n events over min(n, KEYS) messages: layer k holds every message's k-th event, in a shuffled order."""
    keys = min(n, KEYS)
    layers = []
    for k in range(0, n, keys):
        messages = list(range(min(keys, n - k)))
        random.Random(f"{prefix}{k}").shuffle(messages)
        layers.append([_event(m, k // keys, prefix) for m in messages])
    return layers


def _event(m: int, seq: int, prefix: str) -> dict[str, Any]:
    e = workload.event(m, prefix, TYPES[seq % len(TYPES)])
    e["data"]["seq"] = seq
    if e["type"] == "clicked":
        e["data"]["url"] = "https://shop.example.com/orders"  # required of clicked events
    return e


@dataclass
class Measured:
    rate: float  # webhooks/s
    first_ms: float  # the first arrival after PATCH active
    out_of_order: int  # arrivals whose data.seq was not the next of their message
    service_us: float  # CPU of the service's processes per webhook
    backends_us: float  # CPU of the run database's PostgreSQL backends per webhook (only this run's)


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


def _used(before: dict[int, float], pids: list[int]) -> float:
    return sum(s - before.get(pid, 0.0) for pid, s in _cpu_seconds(pids).items())


async def _round(env: Env, cb: Callback, n: int, prefix: str, *, ordered: bool, label: str) -> Measured:
    """Record the events while the callback is disabled, then time PATCH active → all arrived."""
    conn = await env.pg.connect()
    try:
        # The last round's outcomes are recorded after its webhooks arrived: change the ordering on an empty queue.
        deadline = time.monotonic() + 60
        while await conn.fetchval("SELECT count(*) FROM queue"):
            assert time.monotonic() < deadline, "the last round's deliveries are still queued after 60 s"
            await asyncio.sleep(0.02)
        await workload.set_status(env.api, [cb], "disabled")
        await env.api.call("PATCH", f"/v1/callbacks/{cb.id}", {"ordering": "messageKey" if ordered else "none"})
        for layer in _layers(n, prefix):
            await workload.post_events(env.api, layer)
        keyed = await conn.fetchval("SELECT count(*) FROM queue WHERE message_key IS NOT NULL")
        # the service's pooled connections; the machine's other PostgreSQL processes do not count here
        backends = [r["pid"] for r in await conn.fetch(BACKENDS)]
    finally:
        await conn.close()
    assert keyed == (n if ordered else 0), f"{keyed} queued deliveries carry a messageKey"
    service = [env.service.pid, *(c.pid for c in psutil.Process(env.service.pid).children(recursive=True))]
    await env.receiver.reset(order=True)
    cpu_before = _cpu_seconds(service), _cpu_seconds(backends)
    async with env.profile(label):
        t0 = time.monotonic()
        await workload.set_status(env.api, [cb], "active")
        stats, last = await env.receiver.wait_events([cb.name], n, timeout=300)
    service_s, backends_s = _used(cpu_before[0], service), _used(cpu_before[1], backends)
    if stats["verified_bad"]:
        raise RuntimeError(f"{stats['verified_bad']} sampled webhook signatures did not verify")
    first = stats["counters"][cb.name]["first"] - t0
    return Measured(n / (last - t0), first * 1000, stats["out_of_order"], service_s / n * 1e6, backends_s / n * 1e6)


BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


def _median(rounds: list[Measured], what: str) -> float:
    return statistics.median(getattr(m, what) for m in rounds)


async def deliver_ordered(env: Env) -> Result:
    n = env.args.events or 5000
    rounds = env.args.rounds
    cb = await workload.register_callback(env.api, env.receiver, "hook", batch=1)
    print(f"bench: {n} events over {min(n, KEYS)} messageKeys per round; a warm-up round of each kind, then"
          f" unordered and ordered rounds alternately, {rounds} of each (the median counts)", file=sys.stderr,
          flush=True)  # fmt: skip
    measured: dict[bool, list[Measured]] = {False: [], True: []}
    violations: dict[bool, int] = {False: 0, True: 0}
    for r in range(rounds + 1):
        for ordered in (False, True):
            kind = "ordered" if ordered else "unordered"
            m = await _round(env, cb, n, f"{kind[0]}{r}", ordered=ordered, label=f"{kind}-{r}")
            print(f"bench: round {r}{' (warm-up)' if r == 0 else ''} {kind}: {m.rate:,.0f} webhooks/s, first after"
                  f" {m.first_ms:.0f} ms, {m.out_of_order} out of order; CPU per webhook: service"
                  f" {m.service_us:.0f} µs, PostgreSQL backends {m.backends_us:.0f} µs", file=sys.stderr,
                  flush=True)  # fmt: skip
            violations[ordered] += m.out_of_order
            if r:
                measured[ordered].append(m)
    if violations[True]:
        raise RuntimeError(f"{violations[True]} webhooks of ordered rounds arrived out of their message's order")
    plain, keyed = measured[False], measured[True]
    result = Result(
        "deliver-ordered", n, _median(keyed, "rate"), "webhooks/s", _median(plain, "rate"),
        target="ratio >= 0.8 of unordered deliver",
    )  # fmt: skip
    result.met = (result.ratio or 0) >= 0.8
    result.details = {
        "unordered": ", ".join(f"{m.rate:,.0f}" for m in plain),
        "ordered": ", ".join(f"{m.rate:,.0f}" for m in keyed),
        "pair_ratios": ", ".join(f"{b.rate / a.rate:.2f}" for a, b in zip(plain, keyed, strict=True)),
        "message_keys": min(n, KEYS),
        "out_of_order": violations[True],
        "unordered_out_of_order": violations[False],  # unordered rounds promise no order: for information
        "service_us": _median(keyed, "service_us"),  # median CPU per webhook, ordered rounds
        "unordered_service_us": _median(plain, "service_us"),
        "backends_us": _median(keyed, "backends_us"),
        "unordered_backends_us": _median(plain, "backends_us"),
        "first_ms": _median(keyed, "first_ms"),
        "unordered_first_ms": _median(plain, "first_ms"),
    }
    return result
