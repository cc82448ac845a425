"""Ordered delivery per message (`ordering: "messageKey"`): a callback receives each message's events in the
order they were recorded, one at a time; a failing event holds back only the later events of its own
message. (Several processes and kill -9: tests/e2e/test_delivery_controls.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dispatcher import events
from dispatcher.settings import Settings
from tests.conftest import Api, make_key, setup_callback, wait_until
from tests.receiver import Received, Receiver

STEPS = ["sent", "delivered", "opened"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Retries come quickly and there are enough of them that a held-back message outlasts the others.
    return settings.model_copy(update={"retry_schedule": [0.3] * 10})


def key_and_type(req: Received) -> tuple[str, str]:
    """An event's (messageKey, type); a handshake request has neither."""
    body = req.json
    return body.get("data", {}).get("messageKey", ""), body.get("type", "")


def delivered(receiver: Receiver, ok: set[int]) -> list[tuple[str, str]]:
    """(messageKey, type) of each request answered 2xx, in arrival order (`ok`: the ids of those requests)."""
    return [key_and_type(r) for r in receiver.events if id(r) in ok]


async def ordered_callback(api: Api, receiver: Receiver, **fields: Any) -> str:
    callback_id, _ = await setup_callback(api, receiver, **fields)
    status, cb = await api.patch(f"/v1/callbacks/{callback_id}", {"ordering": "messageKey"})
    assert status == 200 and cb["ordering"] == "messageKey", cb
    return callback_id


async def post(api: Api, key: str, *types: str) -> None:
    for t in types:
        status, body = await api.post("/v1/events", {"type": t, "messageKey": key})
        assert status == 201, body


async def test_a_failing_event_holds_back_only_the_later_events_of_its_own_message(api: Api, receiver: Receiver):
    ok: set[int] = set()
    failures = {"n": 0}

    def answer(req: Received) -> int | None:
        key, kind = key_and_type(req)
        if not key:
            return None  # the handshake
        b_done = sum(1 for r in receiver.events if id(r) in ok and key_and_type(r)[0] == "B")
        if (key, kind) == ("A", "sent") and (failures["n"] < 2 or b_done < 3):
            failures["n"] += 1
            return 500
        ok.add(id(req))
        return 200

    receiver.answer = answer
    await ordered_callback(api, receiver)
    await post(api, "A", *STEPS)
    await post(api, "B", *STEPS)
    await receiver.wait_for(failures["n"] + 6, timeout=45)  # eleven tries of A's `sent`, 0.3 s apart
    await wait_until(lambda: _true(len(ok) == 6), timeout=45)
    got = delivered(receiver, ok)
    assert [t for k, t in got if k == "A"] == STEPS and [t for k, t in got if k == "B"] == STEPS
    assert got.index(("B", "opened")) < got.index(("A", "sent"))  # B flowed while A was held back
    # A's later events were not even tried before its first one succeeded.
    tried = [key_and_type(r) for r in receiver.events]
    assert tried.index(("A", "delivered")) > max(i for i, kt in enumerate(tried) if kt == ("A", "sent"))


async def _true(value: bool) -> bool:
    return value


async def test_a_message_never_has_two_events_in_flight(api: Api, receiver: Receiver):
    await ordered_callback(api, receiver)
    for n in range(8):  # successes open the callback's window: several requests may be in flight at once
        await post(api, f"warm-{n}", "sent")
    await receiver.wait_for(8)
    receiver.hold = asyncio.Event()
    await post(api, "A", *STEPS)
    await receiver.wait_for(9)
    await post(api, "B", "sent")  # the marker: claimed after A's later events were due
    await receiver.wait_for(10)
    assert [key_and_type(r) for r in receiver.events[8:]] == [("A", "sent"), ("B", "sent")]
    receiver.hold.set()
    await receiver.wait_for(12)
    assert [t for k, t in map(key_and_type, receiver.events) if k == "A"] == STEPS


async def test_a_final_failure_releases_the_later_events_in_order(api: Api, receiver: Receiver, database):
    receiver.answer = lambda req: 500 if key_and_type(req) == ("A", "sent") else None
    callback_id = await ordered_callback(api, receiver)
    await post(api, "A", *STEPS)
    await receiver.wait_for(11 + 2, timeout=45)  # the first try and ten retries of `sent`, then the two after it
    tried = [key_and_type(r) for r in receiver.events]
    assert tried == [("A", "sent")] * 11 + [("A", "delivered"), ("A", "opened")]
    _, page = await api.get(f"/v1/callbacks/{callback_id}/deliveries?status=failed")
    assert [d["eventType"] for d in page["deliveries"]] == ["sent"]


async def test_retrying_an_event_held_for_a_later_try_releases_the_events_behind_it_in_order(
    database, settings: Settings, aiohttp_client, receiver: Receiver
):
    from dispatcher.runtime import create_app

    slow_retries = settings.model_copy(update={"retry_schedule": [3600.0]})  # the next try is an hour away
    api = Api(await aiohttp_client(create_app(slow_retries, database=database)), await make_key(database, "acme"))
    first_try = {"done": False}

    def answer(req: Received) -> int | None:
        if key_and_type(req) == ("A", "sent") and not first_try["done"]:
            first_try["done"] = True
            return 500
        return None

    receiver.answer = answer
    callback_id = await ordered_callback(api, receiver)
    await post(api, "A", *STEPS)
    await receiver.wait_for(1)

    async def pending_sent() -> str | None:
        _, page = await api.get(f"/v1/callbacks/{callback_id}/deliveries?status=pending")
        held = [d for d in page["deliveries"] if d["eventType"] == "sent" and d["attemptCount"] == 1]
        return held[0]["deliveryId"] if held else None

    delivery_id = await wait_until(pending_sent)
    assert (await api.post(f"/v1/deliveries/{delivery_id}/retry"))[0] == 202
    await receiver.wait_for(4)  # well within the hour: the events behind it were released with it
    assert [key_and_type(r) for r in receiver.events] == [("A", t) for t in ["sent", *STEPS]]


async def test_a_batching_ordered_callback_keeps_each_messages_order_across_batches(api: Api, receiver: Receiver):
    await ordered_callback(api, receiver, batch=10)
    events = [{"type": t, "messageKey": k} for k in ("A", "B", "C") for t in STEPS]
    status, body = await api.post("/v1/events", {"events": events})
    assert status == 201, body

    async def all_nine() -> list[tuple[str, str]] | None:
        got = [(e["data"]["messageKey"], e["type"]) for r in receiver.events for e in r.json]
        return got if len(got) == 9 else None

    got = await wait_until(all_nine)
    for key in ("A", "B", "C"):
        assert [t for k, t in got if k == key] == STEPS


async def test_ordering_is_refused_unless_none_or_messageKey(api: Api, receiver: Receiver):
    status, body = await api.post("/v1/callbacks", {"name": "x", "url": receiver.url, "ordering": "fifo"})
    assert status == 400 and body["error"]["field"] == "ordering", body
    status, cb = await api.post("/v1/callbacks", {"name": "x", "url": receiver.url, "ordering": "messageKey"})
    assert status == 201 and cb["ordering"] == "messageKey", cb
    status, cb = await api.patch(f"/v1/callbacks/{cb['callbackId']}", {"ordering": "none"})
    assert status == 200 and cb["ordering"] == "none"


async def test_a_messages_later_events_wait_out_of_the_claims_way_until_their_turn(
    api: Api, receiver: Receiver, database
):
    """What waits behind an event in flight is not due (claims do not walk it): each is made due in turn."""
    await ordered_callback(api, receiver)
    receiver.hold = asyncio.Event()
    await post(api, "A", *STEPS)
    await receiver.wait_for(1)
    waiting = await database.pool.fetchval("SELECT count(*) FROM queue WHERE next_attempt_at > now()")
    assert waiting == 2
    receiver.hold.set()
    await receiver.wait_for(3)
    assert [key_and_type(r) for r in receiver.events] == [("A", t) for t in STEPS]


async def test_retrying_an_earlier_event_while_a_later_one_is_in_flight_waits_for_it(
    database, settings: Settings, aiohttp_client, receiver: Receiver
):
    """A re-queued earlier event goes before the message's queued events, but never beside one in flight."""
    from dispatcher.runtime import create_app

    # One retry, so `sent` fails for good quickly, and the callback stays active (one probe at a time
    # when failing would hold the marker behind the request in flight).
    quick = settings.model_copy(update={"retry_schedule": [0.2], "failing_after": 100})
    api = Api(await aiohttp_client(create_app(quick, database=database)), await make_key(database, "acme"))
    state = {"sent_fails": True}
    receiver.answer = lambda req: 500 if key_and_type(req) == ("A", "sent") and state["sent_fails"] else None
    receiver.hold_when = lambda req: key_and_type(req) == ("A", "delivered")
    receiver.hold = asyncio.Event()
    callback_id = await ordered_callback(api, receiver)
    for n in range(8):  # successes open the callback's window: several requests may be in flight at once
        await post(api, f"warm-{n}", "sent")
    await receiver.wait_for(8)
    await post(api, "A", "sent", "delivered")
    await receiver.wait_for(8 + 2 + 1)  # `sent` failed for good; `delivered` is in flight, held
    _, page = await api.get(f"/v1/callbacks/{callback_id}/deliveries?status=failed")
    [failed] = page["deliveries"]
    state["sent_fails"] = False
    assert (await api.post(f"/v1/deliveries/{failed['deliveryId']}/retry"))[0] == 202
    await post(api, "B", "sent")  # the marker: claimed after the retried event was due
    await wait_until(lambda: _true(("B", "sent") in [key_and_type(r) for r in receiver.events]))
    assert [key_and_type(r) for r in receiver.events].count(("A", "sent")) == 2
    receiver.hold.set()
    await receiver.wait_for(8 + 2 + 1 + 1 + 1)
    assert key_and_type(receiver.events[-1]) == ("A", "sent")


async def test_an_event_recorded_while_the_one_before_it_finishes_is_due_when_that_one_is_done(
    api: Api, receiver: Receiver, database
):
    """The next event of a message, recorded in a transaction still open while the event before it is
    being finished, is due as soon as that finish commits: it is not left waiting out of the claims' way."""
    receiver.hold = asyncio.Event()
    receiver.hold_when = lambda req: key_and_type(req) == ("A", "sent")
    await ordered_callback(api, receiver)
    await post(api, "A", "sent")
    await receiver.wait_for(1)  # `sent` is at the receiver, its answer held
    pool = database.pool
    account_id = await pool.fetchval("SELECT id FROM accounts WHERE name = 'acme'")
    sent_id = await pool.fetchval("SELECT id FROM events WHERE message_key = 'A' AND type = 'sent'")

    async def first_finished_or_waiting() -> bool:
        # The worker finishing `sent` has either committed, or waits for the transaction below (a lock).
        gone = await pool.fetchval("SELECT count(*) = 0 FROM queue WHERE event_id = $1", sent_id)
        waiting = await pool.fetchval(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return gone or waiting

    async with pool.acquire() as conn, conn.transaction():
        await events.record_event(conn, account_id, "delivered", "A", {})
        receiver.hold.set()  # `sent` succeeds while `delivered` is not committed yet
        await wait_until(first_finished_or_waiting)
    await wait_until(lambda: _true_async(pool, "SELECT count(*) = 0 FROM queue WHERE event_id = $1", sent_id))
    due = await pool.fetchval("SELECT coalesce(bool_and(next_attempt_at <= now()), true) FROM queue")
    assert due is True  # `delivered` is due now (or already sent), not parked behind a finished event
    await receiver.wait_for(2)
    assert [key_and_type(r) for r in receiver.events] == [("A", "sent"), ("A", "delivered")]


async def _true_async(pool: Any, sql: str, *args: Any) -> bool:
    return bool(await pool.fetchval(sql, *args))


async def test_recording_never_waits_for_the_finish_of_an_earlier_event_and_the_order_holds(
    database, settings: Settings, aiohttp_client, receiver: Receiver
):
    """An event recorded while the earlier event of its message is being finished (its row deleted, not yet
    committed) is recorded at once, and if that finish is undone, still goes only after the earlier one."""
    from dispatcher.runtime import create_app

    slow_retries = settings.model_copy(update={"retry_schedule": [3600.0]})  # `sent` waits an hour after a 500
    api = Api(await aiohttp_client(create_app(slow_retries, database=database)), await make_key(database, "acme"))
    first_try = {"done": False}

    def answer(req: Received) -> int | None:
        if key_and_type(req) == ("A", "sent") and not first_try["done"]:
            first_try["done"] = True
            return 500
        return None

    receiver.answer = answer
    callback_id = await ordered_callback(api, receiver)
    await post(api, "A", "sent")

    async def pending_sent() -> str | None:
        _, page = await api.get(f"/v1/callbacks/{callback_id}/deliveries?status=pending")
        held = [d for d in page["deliveries"] if d["attemptCount"] == 1]
        return held[0]["deliveryId"] if held else None

    delivery_id = await wait_until(pending_sent)
    async with database.pool.acquire() as conn:
        finish = conn.transaction()
        await finish.start()
        await conn.execute("DELETE FROM queue WHERE message_key = 'A'")  # a finish in progress
        await asyncio.wait_for(post(api, "A", "delivered"), timeout=10)  # recorded meanwhile: nothing waits
        await finish.rollback()  # … and the finish undone: `sent` is still first in line
    await post(api, "B", "sent")  # the marker
    await receiver.wait_for(2)
    assert [key_and_type(r) for r in receiver.events] == [("A", "sent"), ("B", "sent")]
    assert (await api.post(f"/v1/deliveries/{delivery_id}/retry"))[0] == 202
    await receiver.wait_for(4)
    assert [key_and_type(r) for r in receiver.events][2:] == [("A", "sent"), ("A", "delivered")]
