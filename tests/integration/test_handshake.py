"""The ownership handshake tells what happened: the callback shows the latest verification request's
outcome, an undelivered one is retried from PostgreSQL by whichever process runs the retrier, and a resend
answers its own outcome. Receivers are real aiohttp servers; a "not listening yet" one is a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from dispatcher import crypto
from dispatcher.handshake import HandshakeRetrier
from dispatcher.runtime import create_app
from tests.conftest import Api, make_key, setup_callback, wait_until
from tests.receiver import Receiver


@pytest.fixture
def settings(settings):
    # Short, and long enough in total (6 s) that a receiver started right after a failure is still retried.
    return settings.model_copy(update={"verification_retry_schedule": [0.3] * 20})


@pytest.fixture
async def not_listening() -> AsyncIterator[Receiver]:
    """A receiver whose port is free: requests are refused until the test starts it on that port."""
    probe = await Receiver().start()
    await probe.stop()
    receiver = Receiver(port=probe.port)
    yield receiver
    await receiver.stop()


async def verification_of(api: Api, callback_id: str) -> dict[str, Any]:
    status, body = await api.get(f"/v1/callbacks/{callback_id}")
    assert status == 200, body
    return body["verification"]


async def state_is(api: Api, callback_id: str, **expected: Any) -> dict[str, Any] | None:
    state = await verification_of(api, callback_id)
    return state if all(state[k] == v for k, v in expected.items()) else None


async def test_a_handshake_refused_shows_failed_and_is_retried_until_delivered_once_the_receiver_listens(
    api: Api, not_listening: Receiver
):
    """The user learns the signing secret from the create answer, so a verifying receiver starts after the
    first request: that request is refused, and the handshake must not be lost."""
    status, cb = await api.post("/v1/callbacks", {"name": "late", "url": not_listening.url})
    assert status == 201, cb
    cid = cb["callbackId"]
    assert cb["verification"]["status"] == "sent" and cb["verification"]["attempts"] == 0

    failed = await wait_until(lambda: state_is(api, cid, status="failed"))
    assert failed["error"] == "connection_error" and failed["statusCode"] is None
    assert failed["lastAttemptAt"] is not None and failed["nextAttemptAt"] is not None
    assert failed["resend"] == f"POST /v1/callbacks/{cid}/verification"

    await not_listening.start()
    delivered = await wait_until(lambda: state_is(api, cid, status="delivered"))
    assert delivered["statusCode"] == 200 and delivered["error"] is None and delivered["nextAttemptAt"] is None
    assert delivered["attempts"] >= 2
    [req] = not_listening.requests
    req.verify(cb["signingSecret"])
    status, body = await api.post(f"/v1/callbacks/{cid}/verify", {"verificationKey": req.json["verificationKey"]})
    assert status == 200 and body["status"] == "active"
    assert body["verification"]["status"] == "delivered" and body["verification"]["resend"] is None


async def test_any_process_running_the_retrier_sends_a_handshake_another_process_could_not(
    database, settings, aiohttp_client, not_listening: Receiver
):
    """The retry state lives in PostgreSQL: an API-only process makes the first request, and a separate
    worker process (here: a retrier of its own) delivers it."""
    client = await aiohttp_client(create_app(settings, database=database, role="api"))
    api = Api(client, await make_key(database, "acme"))
    _, cb = await api.post("/v1/callbacks", {"name": "split", "url": not_listening.url})
    await wait_until(lambda: state_is(api, cb["callbackId"], status="failed", error="connection_error"))
    await not_listening.start()
    retrier = HandshakeRetrier(database, settings, crypto.load_keyring(settings))
    await retrier.start()
    try:
        await wait_until(lambda: state_is(api, cb["callbackId"], status="delivered", statusCode=200))
    finally:
        await retrier.stop()
    not_listening.requests[0].verify(cb["signingSecret"])


async def test_resend_answers_delivered_with_the_receivers_status_code(api: Api, receiver: Receiver):
    _, cb = await api.post("/v1/callbacks", {"name": "orders", "url": receiver.url})
    await receiver.wait_for(1, events_only=False)
    status, body = await api.post(f"/v1/callbacks/{cb['callbackId']}/verification")
    assert status == 200, body
    assert body["status"] == "delivered" and body["statusCode"] == 200 and body["error"] is None
    assert body["attempts"] == 1 and body["nextAttemptAt"] is None
    assert len(receiver.requests) == 2  # the answer came after the request arrived
    assert await verification_of(api, cb["callbackId"]) == body


async def test_resend_answers_failed_with_the_status_code_of_a_receiver_that_refuses_it(api: Api, receiver: Receiver):
    receiver.mode = "fail"
    _, cb = await api.post("/v1/callbacks", {"name": "orders", "url": receiver.url})
    await receiver.wait_for(1, events_only=False)
    status, body = await api.post(f"/v1/callbacks/{cb['callbackId']}/verification")
    assert status == 200, body
    assert body["status"] == "failed" and body["statusCode"] == 500 and body["error"] is None
    assert body["nextAttemptAt"] is not None  # retried


async def test_resend_answers_failed_with_the_error_kind_when_nothing_listens(api: Api, not_listening: Receiver):
    _, cb = await api.post("/v1/callbacks", {"name": "orders", "url": not_listening.url})
    status, body = await api.post(f"/v1/callbacks/{cb['callbackId']}/verification")
    assert status == 200, body
    assert body["status"] == "failed" and body["error"] == "connection_error" and body["statusCode"] is None
    assert body["attempts"] == 1 and body["resend"] == f"POST /v1/callbacks/{cb['callbackId']}/verification"


async def test_a_handshake_whose_retries_are_exhausted_stays_failed_with_nothing_due(
    database, settings, aiohttp_client, not_listening: Receiver
):
    one_retry = settings.model_copy(update={"verification_retry_schedule": [0.1]})
    client = await aiohttp_client(create_app(one_retry, database=database))
    api = Api(client, await make_key(database, "acme"))
    _, cb = await api.post("/v1/callbacks", {"name": "orders", "url": not_listening.url})
    state = await wait_until(lambda: state_is(api, cb["callbackId"], status="failed", nextAttemptAt=None))
    assert state["attempts"] == 2 and state["error"] == "connection_error"
    assert state["resend"] is not None
    # nothing is due, and the key is no longer kept
    row = await database.pool.fetchrow("SELECT verification_next_at, verification_key_enc FROM callbacks")
    assert row["verification_next_at"] is None and row["verification_key_enc"] is None


async def test_a_handshake_to_a_new_url_starts_over(api: Api, receiver: Receiver):
    _, cb = await api.post("/v1/callbacks", {"name": "orders", "url": receiver.url})
    await receiver.wait_for(1, events_only=False)
    other = await Receiver().start()
    try:
        status, body = await api.patch(f"/v1/callbacks/{cb['callbackId']}", {"url": other.url})
        assert status == 200 and body["verification"]["status"] == "sent", body
        await wait_until(lambda: state_is(api, cb["callbackId"], status="delivered", attempts=1))
        assert len(other.requests) == 1
    finally:
        await other.stop()


async def test_a_handshake_whose_sender_never_recorded_an_outcome_is_sent_again_when_its_lease_ends(
    database, settings, receiver: Receiver
):
    """The first request is leased to the process that creates the callback; if that process dies before
    recording what happened, the handshake is due again when the lease ends, for any retrier."""
    from dispatcher import callbacks

    keyring = crypto.load_keyring(settings)
    async with database.pool.acquire() as conn:
        account_id = await conn.fetchval("INSERT INTO accounts (name) VALUES ('acme') RETURNING id")
        row, _, key = await callbacks.create_callback(
            conn, keyring, account_id, name="orphan", url=receiver.url, description=None, max_batch_size=1, lease=0.0
        )
    retrier = HandshakeRetrier(database, settings, keyring)
    await retrier.start()
    try:
        [req] = await receiver.wait_for(1, events_only=False)
    finally:
        await retrier.stop()
    assert req.json == {"callbackId": f"cb_{row['id']}", "verificationKey": key}
    state = await database.pool.fetchrow("SELECT verification_status, verification_attempts FROM callbacks")
    assert tuple(state) == ("delivered", 1)


async def test_resend_on_a_verified_callback_answers_its_handshake_and_sends_nothing(api: Api, receiver: Receiver):
    """A retry, or a receiver that verifies itself, may finish the handshake before the user's resend:
    the resend then reports the finished handshake instead of failing."""
    callback_id, _ = await setup_callback(api, receiver)
    before = len(receiver.requests)
    status, body = await api.post(f"/v1/callbacks/{callback_id}/verification")
    assert status == 200, body
    assert body["status"] == "delivered" and body["resend"] is None
    assert len(receiver.requests) == before  # the answer comes after any request it would have made
    assert await verification_of(api, callback_id) == body
