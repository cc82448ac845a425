"""Endpoint rate limits (`rateLimit: {perSecond, burst}`): deliveries wait for their turn in a token bucket
kept in PostgreSQL, so every worker process shares it; waiting is not a failure and spends no retry budget.
A 429 without Retry-After halves the pace for a while. (Three processes sharing one limit:
tests/e2e/test_delivery_controls.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, setup_callback, wait_until
from tests.receiver import Received, Receiver


def most_in_one_second(arrivals: list[float]) -> int:
    """The most requests that arrived within any one-second window."""
    times = sorted(arrivals)
    return max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))


async def limited_callback(api: Api, receiver: Receiver, rate: dict[str, Any], **fields: Any) -> str:
    callback_id, _ = await setup_callback(api, receiver, **fields)
    status, cb = await api.patch(f"/v1/callbacks/{callback_id}", {"rateLimit": rate})
    assert status == 200 and cb["rateLimit"] == {"burst": rate.get("burst", 10), **rate}, cb
    return callback_id


async def queue_events(api: Api, callback_id: str, n: int) -> None:
    """n events, recorded while the callback is paused, then all due at once."""
    assert (await api.patch(f"/v1/callbacks/{callback_id}", {"paused": True}))[0] == 200
    events = [{"type": "sent", "messageKey": f"m-{i}"} for i in range(n)]
    status, body = await api.post("/v1/events", {"events": events})
    assert status in (200, 201, 207), body
    assert (await api.patch(f"/v1/callbacks/{callback_id}", {"paused": False}))[0] == 200


async def test_a_rate_limited_callback_gets_no_more_than_its_rate_plus_its_burst_in_any_second(
    api: Api, receiver: Receiver
):
    callback_id = await limited_callback(api, receiver, {"perSecond": 10, "burst": 3})
    await queue_events(api, callback_id, 35)
    got = await receiver.wait_for(35, timeout=30)
    arrivals = [r.at for r in got]
    assert most_in_one_second(arrivals) <= 10 + 3

    # Waiting is not failing: every delivery succeeded at its first attempt.
    async def all_succeeded() -> list[dict[str, Any]] | None:
        _, page = await api.get(f"/v1/callbacks/{callback_id}/deliveries?status=succeeded&limit=100")
        return page["deliveries"] if len(page["deliveries"]) == 35 else None

    assert {d["attemptCount"] for d in await wait_until(all_succeeded)} == {1}


async def test_a_rate_limit_counts_requests_so_a_batch_is_one_turn(api: Api, receiver: Receiver):
    callback_id = await limited_callback(api, receiver, {"perSecond": 2, "burst": 1}, batch=10)
    await queue_events(api, callback_id, 30)
    got = await receiver.wait_for(3, timeout=30)
    assert sorted(len(r.json) for r in got) == [10, 10, 10]


async def test_a_429_without_retry_after_halves_the_pace_for_a_while(api: Api, receiver: Receiver, database):
    def answer(req: Received) -> int | None:
        return 429 if len(receiver.events) == 1 else None  # the first request only

    receiver.answer = answer
    callback_id = await limited_callback(api, receiver, {"perSecond": 20, "burst": 1})
    await queue_events(api, callback_id, 1)
    await receiver.wait_for(1)
    # The 429 is recorded, and with it the slower pace: the bucket's pace halves for a minute.
    async with database.pool.acquire() as conn:
        paced = await wait_until(lambda: conn.fetchrow(
            "SELECT pace, slowed_until > now() + interval '50 seconds' AS long FROM callback_rates WHERE pace < 1"))  # fmt: skip
    assert (paced["pace"], paced["long"]) == (0.5, True)
    await queue_events(api, callback_id, 20)
    got = await receiver.wait_for(1 + 1 + 20, timeout=30)  # the 429'd one again, and the 20
    arrivals = [r.at for r in got[2:]]
    assert most_in_one_second(arrivals) <= 10 + 1  # half of 20 per second, plus the burst


@pytest.mark.parametrize(
    ("rate", "field"),
    [
        ({"perSecond": 0}, "perSecond"),
        ({"perSecond": -1}, "perSecond"),
        ({"perSecond": "20"}, "perSecond"),
        ({"perSecond": 20, "burst": 0}, "burst"),
        ({"perSecond": 20, "burst": 2.5}, "burst"),
        ({"perSecond": 20, "burst": True}, "burst"),
        ({"perSecond": 20, "extra": 1}, "extra"),
        ({}, "perSecond"),
    ],
)
async def test_a_bad_rate_limit_is_refused_naming_its_field(api: Api, receiver: Receiver, rate, field):
    status, body = await api.post("/v1/callbacks", {"name": "x", "url": receiver.url, "rateLimit": rate})
    assert status == 400, body
    assert body["error"]["field"].endswith(field), body


async def test_a_rate_limit_can_be_changed_and_cleared(api: Api, receiver: Receiver):
    status, cb = await api.post("/v1/callbacks", {"name": "x", "url": receiver.url, "rateLimit": {"perSecond": 2.5}})
    assert status == 201 and cb["rateLimit"] == {"perSecond": 2.5, "burst": 3}, cb
    status, cb = await api.patch(f"/v1/callbacks/{cb['callbackId']}", {"rateLimit": {"perSecond": 50, "burst": 7}})
    assert status == 200 and cb["rateLimit"] == {"perSecond": 50, "burst": 7}
    status, cb = await api.patch(f"/v1/callbacks/{cb['callbackId']}", {"name": "y"})
    assert cb["rateLimit"] == {"perSecond": 50, "burst": 7}  # untouched by other changes
    status, cb = await api.patch(f"/v1/callbacks/{cb['callbackId']}", {"rateLimit": None})
    assert status == 200 and cb["rateLimit"] is None
