"""Pausing a callback and sending it a test event through the JSON API: a paused callback's deliveries
wait in the queue until it is resumed, and a test event is a signed sample for that callback only,
recorded like any delivery and marked as a test."""

from __future__ import annotations

from dispatcher import ids
from dispatcher.delivery import policy, queue
from tests.conftest import Api, setup_callback
from tests.receiver import Receiver


async def post_event(api: Api, message_key: str, type_: str = "sent") -> str:
    status, body = await api.post("/v1/events", {"type": type_, "messageKey": message_key})
    assert status == 201, body
    return body["eventId"]


async def untouched_rows(database, callback_id: str) -> int:
    """Queue rows of the callback no worker has claimed or tried."""
    return await database.pool.fetchval(
        "SELECT count(*) FROM queue WHERE callback_id = $1 AND attempts = 0 AND attempt_ids = '{}'"
        " AND leased_until = '-infinity'",
        ids.decode("cb", callback_id, "callback"),
    )


async def test_a_paused_callback_gets_nothing_until_it_is_resumed(api: Api, receiver: Receiver, database):
    paused_id, secret = await setup_callback(api, receiver, name="paused")
    marker = await Receiver().start()
    try:
        await setup_callback(api, marker, name="marker")
        status, body = await api.patch(f"/v1/callbacks/{paused_id}", {"paused": True})
        assert status == 200 and body["paused"] is True and body["status"] == "active"
        await post_event(api, "m-1")
        # The marker callback's copy of the same event arrived: a claim ran after the event was
        # recorded, and the paused callback's row, due as well, was left alone.
        await marker.wait_for(1)
        assert await untouched_rows(database, paused_id) == 1
        assert receiver.events == []
        status, body = await api.patch(f"/v1/callbacks/{paused_id}", {"paused": False})
        assert status == 200 and body["paused"] is False
        [req] = await receiver.wait_for(1)
        assert req.verify(secret)["data"]["messageKey"] == "m-1"
    finally:
        await marker.stop()


async def test_a_manual_pause_outlives_the_workers_health_updates_and_a_re_enable(
    api: Api, receiver: Receiver, database
):
    cb_id, _ = await setup_callback(api, receiver)
    await api.patch(f"/v1/callbacks/{cb_id}", {"paused": True})
    number = ids.decode("cb", cb_id, "callback")
    async with database.pool.acquire() as conn, conn.transaction():
        # What a worker writes when a request that was in flight at the pause succeeds: no pause of its own.
        await queue.set_health(conn, [(number, policy.Health("active", 0, None, None))])
    assert (await api.get(f"/v1/callbacks/{cb_id}"))[1]["paused"] is True
    await api.patch(f"/v1/callbacks/{cb_id}", {"status": "disabled"})
    status, body = await api.patch(f"/v1/callbacks/{cb_id}", {"status": "active"})
    assert status == 200 and body["status"] == "active" and body["paused"] is True


async def test_resuming_leaves_a_failing_callbacks_probe_pause_alone(api: Api, receiver: Receiver, database):
    cb_id, _ = await setup_callback(api, receiver)
    number = ids.decode("cb", cb_id, "callback")
    await database.pool.execute("UPDATE callbacks SET paused_until = now() + interval '1 hour' WHERE id = $1", number)
    status, body = await api.patch(f"/v1/callbacks/{cb_id}", {"paused": False})
    assert status == 200 and body["paused"] is False
    assert await database.pool.fetchval("SELECT paused_until > now() FROM callbacks WHERE id = $1", number)


async def test_paused_is_in_every_callback_answer(api: Api, receiver: Receiver):
    status, cb = await api.post("/v1/callbacks", {"name": "orders", "url": receiver.url})
    assert status == 201 and cb["paused"] is False
    _, listed = await api.get("/v1/callbacks")
    assert [c["paused"] for c in listed["callbacks"]] == [False]
    status, body = await api.patch(f"/v1/callbacks/{cb['callbackId']}", {"paused": "yes"})
    assert status == 400


async def test_a_test_event_reaches_only_its_callback_signed_and_marked(api: Api, receiver: Receiver, database):
    cb_id, secret = await setup_callback(api, receiver, name="target")
    other = await Receiver().start()
    try:
        other_id, _ = await setup_callback(api, other, name="other")
        status, body = await api.post(f"/v1/callbacks/{cb_id}/test", {})
        assert status == 202, body
        assert body["status"] == "pending" and body["messageKey"].startswith("test_")
        # One statement recorded the event and its only queue row: nothing was fanned out to the other.
        other_rows = await database.pool.fetchval(
            "SELECT (SELECT count(*) FROM queue WHERE callback_id = $1) + (SELECT count(*) FROM deliveries WHERE callback_id = $1)",
            ids.decode("cb", other_id, "callback"),
        )
        assert other_rows == 0
        [req] = await receiver.wait_for(1)
        payload = req.verify(secret)  # the public standardwebhooks package checks the signature
        assert payload["type"] == "delivered"
        assert payload["data"]["test"] is True and payload["data"]["messageKey"] == body["messageKey"]
        assert req.headers["webhook-id"] == body["deliveryId"]
        delivery = await _wait_succeeded(api, body["deliveryId"])
        assert delivery["test"] is True and delivery["callbackId"] == cb_id
        _, listed = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
        assert [d["test"] for d in listed["deliveries"]] == [True]
    finally:
        await other.stop()


async def _wait_succeeded(api: Api, delivery_id: str) -> dict:
    from tests.conftest import wait_until

    async def done() -> dict | None:
        _, d = await api.get(f"/v1/deliveries/{delivery_id}")
        return d if d["status"] == "succeeded" else None

    return await wait_until(done)


async def test_a_test_event_of_a_chosen_type_carries_sample_data(api: Api, receiver: Receiver):
    cb_id, secret = await setup_callback(api, receiver)
    status, body = await api.post(f"/v1/callbacks/{cb_id}/test", {"type": "bounced"})
    assert status == 202, body
    [req] = await receiver.wait_for(1)
    payload = req.verify(secret)
    assert payload["type"] == "bounced" and payload["data"]["bounceType"] == "hard" and payload["data"]["test"] is True


async def test_an_ordinary_event_is_not_marked_as_a_test(api: Api, receiver: Receiver):
    cb_id, _ = await setup_callback(api, receiver)
    await post_event(api, "test_lookalike")
    await receiver.wait_for(1)
    _, listed = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
    assert [d["test"] for d in listed["deliveries"]] == [False]


async def test_a_test_event_is_refused_before_verification_in_another_account_and_for_unknown_types(
    api: Api, other_api: Api, receiver: Receiver
):
    status, cb = await api.post("/v1/callbacks", {"name": "orders", "url": receiver.url})
    assert (await api.post(f"/v1/callbacks/{cb['callbackId']}/test", {}))[0] == 409
    assert (await other_api.post(f"/v1/callbacks/{cb['callbackId']}/test", {}))[0] == 404
    assert (await api.post(f"/v1/callbacks/{cb['callbackId']}/test", {"type": "callback.failing"}))[0] == 400
