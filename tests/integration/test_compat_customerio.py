"""Customer.io's transactional API, driven by Customer.io's own Python client (`customerio` on PyPI): a send
goes through the native send path to a real SMTP server, and its events reach a `customerio` callback as
Customer.io reporting webhooks, signed as Customer.io signs them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from email import message_from_bytes, policy
from typing import Any

import pytest
from customerio import APIClient, CustomerIOException, SendEmailRequest

from dispatcher.runtime import create_app
from tests.conftest import Api, make_key, wait_until
from tests.integration.test_smtp_transport import free_port

RECEIPT = {
    "definitionKey": "receipt",
    "name": "Receipt",
    "content": {"from": "shop@example.com", "subject": "Order {{ trigger.order }} for {{ customer.id }}",
                "html": "<p>Hi {{ trigger.name }}, {{ customer.email }}</p>", "text": "Hi {{ trigger.name }}"},
}  # fmt: skip


@pytest.fixture
async def cio(database, settings, aiohttp_client, smtp) -> tuple[Api, str]:
    """The app on a real socket with a real SMTP server: (native client, base URL for Customer.io's client)."""
    _, port = smtp
    http_port = free_port()
    s = settings.model_copy(update={"mail_url": f"smtp://127.0.0.1:{port}?timeout=5",
                                    "public_url": f"http://127.0.0.1:{http_port}"})  # fmt: skip
    client = await aiohttp_client(create_app(s, database=database), server_kwargs={"port": http_port})
    return Api(client, await make_key(database, "acme")), str(client.make_url("")).rstrip("/")


async def send(key: str, url: str, **fields: Any) -> dict[str, Any]:
    """One `send_email` through Customer.io's client (it is synchronous: run it off the event loop)."""

    def call() -> dict[str, Any]:
        with APIClient(key, url=url, retries=0) as client:
            result: dict[str, Any] = client.send_email(SendEmailRequest(**fields))
            return result

    return await asyncio.to_thread(call)


def received(smtp: Any) -> list[Any]:
    return [message_from_bytes(r.content, policy=policy.default) for r in smtp[0].received]


async def customerio_callback(api: Api, receiver: Any) -> str:
    """A verified `customerio` callback subscribed to every event type; its signing secret."""
    status, created = await api.post("/v1/callbacks", {"name": "cio", "url": receiver.url, "format": "customerio"})
    assert status == 201, created
    [verification] = await receiver.wait_for(1, events_only=False)
    verify = {"verificationKey": verification.json["verificationKey"]}
    assert (await api.post(f"/v1/callbacks/{created['callbackId']}/verify", verify))[0] == 200
    await api.post("/v1/subscriptions", {"name": "all", "callbackId": created["callbackId"], "eventTypes": ["*"]})
    secret: str = created["signingSecret"]
    return secret


async def test_the_official_client_sends_a_templated_email_and_its_events_arrive_signed_as_customerio(
    cio, database, smtp, receiver
):
    api, url = cio
    secret = await customerio_callback(api, receiver)
    status, definition = await api.post("/v1/definitions", RECEIPT)
    assert status == 201, definition
    numeric = definition["transactionalMessageId"]  # the number transactional_message_id names
    answer = await send(api.key, url, transactional_message_id=numeric, to="ann@example.com",
                        identifiers={"id": "user-42"}, message_data={"order": "A-7", "name": "Ann"})  # fmt: skip
    assert set(answer) == {"delivery_id", "queued_at"}
    assert abs(answer["queued_at"] - time.time()) < 60
    await wait_until(lambda: asyncio.sleep(0, bool(smtp[0].received)))
    [mail] = received(smtp)
    assert mail["To"] == "ann@example.com" and mail["Subject"] == "Order A-7 for user-42"
    assert "Hi Ann, ann@example.com" in mail.get_body(("html",)).get_content()

    requests = await receiver.wait_for(2)
    bodies = []
    for request in requests:
        timestamp = request.headers["x-cio-timestamp"]
        expected = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + request.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request.headers["x-cio-signature"], expected)
        bodies.append(request.json)
    [sent] = [b for b in bodies if b["metric"] == "sent"]
    assert sent["object_type"] == "email" and isinstance(sent["timestamp"], int) and sent["event_id"]
    assert sent["data"] == {"delivery_id": answer["delivery_id"], "recipient": "ann@example.com",
                            "customer_id": "user-42", "identifiers": {"id": "user-42"},
                            "transactional_message_id": numeric}  # fmt: skip
    status, message = await api.get(f"/v1/messages/{answer['delivery_id']}")
    assert status == 200 and message["send"]["definitionKey"] == "receipt", message


async def test_a_definition_is_found_by_its_key_as_well_as_its_numeric_id(cio, smtp):
    api, url = cio
    assert (await api.post("/v1/definitions", RECEIPT))[0] == 201
    answer = await send(api.key, url, transactional_message_id="receipt", to="bob@example.com",
                        identifiers={"email": "bob@example.com"}, message_data={"order": "B-1", "name": "Bob"})  # fmt: skip
    await wait_until(lambda: asyncio.sleep(0, bool(smtp[0].received)))
    [mail] = received(smtp)
    assert mail["Subject"].strip() == "Order B-1 for"  # customer.id: not among the identifiers given
    status, message = await api.get(f"/v1/messages/{answer['delivery_id']}")
    assert status == 200 and message["send"]["definitionKey"] == "receipt"


async def test_a_send_without_a_template_carries_its_own_content(cio, smtp):
    api, url = cio
    await send(api.key, url, to="cy@example.com", identifiers={"cio_id": "c1"}, _from="shop@example.com",
               subject="Code {{ trigger.code }}", body_plain="Your code: {{ trigger.code }}",
               message_data={"code": "991"}, headers={"X-Order": "A-7"})  # fmt: skip
    await wait_until(lambda: asyncio.sleep(0, bool(smtp[0].received)))
    [mail] = received(smtp)
    assert mail["Subject"] == "Code 991" and mail["X-Order"] == "A-7"
    assert "Your code: 991" in mail.get_body(("plain",)).get_content()


async def test_send_at_schedules_the_message(cio):
    api, url = cio
    later = int(time.time()) + 3600
    answer = await send(api.key, url, to="dee@example.com", identifiers={"id": 7}, _from="shop@example.com",
                        subject="Later", body="<p>later</p>", send_at=later)  # fmt: skip
    status, message = await api.get(f"/v1/messages/{answer['delivery_id']}")
    assert status == 200 and message["status"] == "scheduled", message
    assert message["send"]["scheduledFor"].startswith(time.strftime("%Y-%m-%dT%H", time.gmtime(later)))


async def test_send_at_more_than_90_days_ahead_is_refused_in_customerios_error_shape(cio):
    api, url = cio
    body = {"to": "eve@example.com", "identifiers": {"id": "e"}, "from": "shop@example.com", "subject": "s",
            "body": "b", "send_at": int(time.time()) + 91 * 86400}  # fmt: skip
    status, answer = await api.post("/v1/send/email", body)
    assert status == 400 and set(answer) == {"meta"}, answer
    assert answer["meta"]["error"].startswith("send_at:") and "90 days" in answer["meta"]["error"]


@pytest.mark.parametrize("identifiers", [{}, {"id": "a", "email": "a@example.com"}, {"phone": "1"}])
async def test_identifiers_must_hold_exactly_one_of_id_email_cio_id(cio, identifiers):
    api, _ = cio
    body = {"to": "f@example.com", "identifiers": identifiers, "from": "s@example.com", "subject": "s", "body": "b"}
    status, answer = await api.post("/v1/send/email", body)
    assert status == 400 and answer["meta"]["error"].startswith("identifiers"), answer


async def test_errors_name_the_customerio_field_and_the_client_raises(cio):
    api, url = cio
    status, answer = await api.post("/v1/send/email", {"to": "g@example.com", "identifiers": {"id": "g"},
                                                       "from": "s@example.com", "body": "b"})  # fmt: skip
    assert status == 400 and answer["meta"]["error"].startswith("subject:"), answer
    status, answer = await api.post("/v1/send/email", {"to": "g@example.com", "identifiers": {"id": "g"},
                                                       "transactional_message_id": 999999})  # fmt: skip
    assert status == 404 and "transactional_message_id" in answer["meta"]["error"], answer
    status, answer = await api.post("/v1/send/email", {"to": "g@example.com", "identifiers": {"id": "g"},
                                                       "from": "s@example.com", "subject": "s", "body": "b",
                                                       "attachments": {"run.exe": "AAAA"}})  # fmt: skip
    assert status == 400 and answer["meta"]["error"].startswith("attachments"), answer
    with pytest.raises(CustomerIOException, match="404"):
        await send(api.key, url, transactional_message_id="nope", to="g@example.com", identifiers={"id": "g"})


async def test_a_key_without_the_messages_send_scope_is_refused(cio, database):
    api, _ = cio
    reader = await make_key(database, "acme", ["events:read"])
    body = {"to": "h@example.com", "identifiers": {"id": "h"}, "from": "s@example.com", "subject": "s", "body": "b"}
    status, answer = await api.post("/v1/send/email", body, key=reader)
    assert status == 403 and "messages:send" in answer["meta"]["error"], answer
    status, answer = await api.post("/v1/send/email", body, key="wrong")
    assert status == 401 and set(answer) == {"meta"}, answer
