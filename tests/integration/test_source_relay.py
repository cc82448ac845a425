"""Mail dispatcher sends through a provider's SMTP relay carries the messageKey in the header that
provider echoes (DISPATCHER_MAIL_PROVIDER), and remembers the Message-ID it went out with: the
provider's events, built from what the relay (aiosmtpd) received, come back to the same message."""

from __future__ import annotations

import json
import time
from email import message_from_bytes, policy
from typing import Any

import orjson
import pytest

from dispatcher.runtime import create_app
from tests.conftest import Api, make_key, wait_until
from tests.integration.sources import source_post
from tests.integration.test_smtp_transport import free_port
from tests.integration.test_source_sendgrid import keypair, signed


async def relay_api(database: Any, settings: Any, aiohttp_client: Any, smtp: Any, provider: str) -> Api:
    s = settings.model_copy(update={"mail_url": f"smtp://127.0.0.1:{smtp[1]}?timeout=5", "mail_provider": provider})
    client = await aiohttp_client(create_app(s, database=database), server_kwargs={"port": free_port()})
    return Api(client, await make_key(database, "acme"))


async def send_and_relay(api: Api, smtp: Any, key: str) -> Any:
    status, body = await api.post(f"/v1/messages/{key}", {
        "recipient": {"to": "ann@example.com"}, "from": "shop@example.com", "subject": "Receipt", "text": "Thanks",
    })  # fmt: skip
    assert status == 202, body

    async def relayed() -> Any:
        return smtp[0].received[-1] if smtp[0].received else None

    return message_from_bytes((await wait_until(relayed)).content, policy=policy.default)


async def types_of(api: Api, key: str, *wanted: str) -> list[str] | None:
    _, msg = await api.get(f"/v1/messages/{key}")
    types = [e["type"] for e in msg["events"]]
    return types if all(t in types for t in wanted) else None


@pytest.fixture
async def sendgrid_relay(database, settings, aiohttp_client, smtp) -> tuple[Api, dict[str, Any], Any]:
    api = await relay_api(database, settings, aiohttp_client, smtp, "sendgrid")
    private, public = keypair()
    status, src = await api.post("/v1/sources", {"name": "sg", "provider": "sendgrid", "config": {"publicKey": public}})
    assert status == 201, src
    return api, src, private


async def test_mail_through_the_sendgrid_relay_carries_the_messagekey_and_its_events_come_back(sendgrid_relay, smtp):
    api, src, private = sendgrid_relay
    mail = await send_and_relay(api, smtp, "order-77")
    custom_args = json.loads(mail["X-SMTPAPI"])["unique_args"]
    assert custom_args == {"messageKey": "order-77"}
    # SendGrid puts custom arguments at the top level of each event, and the Message-ID in smtp-id.
    event = {"event": "delivered", "email": "ann@example.com", "timestamp": int(time.time()), "sg_event_id": "d-1",
             "sg_message_id": "abc.filter0001", "smtp-id": mail["Message-ID"], **custom_args}  # fmt: skip
    body = orjson.dumps([event])
    assert (await source_post(api, src, body, signed(private, body)))[0] == 200
    assert await wait_until(lambda: types_of(api, "order-77", "sent", "delivered"))


async def test_a_provider_event_naming_only_the_message_id_finds_the_message_dispatcher_sent(sendgrid_relay, smtp):
    """An app that strips custom arguments, or a provider that drops them: the Message-ID dispatcher
    recorded when it sent the mail still leads to the messageKey."""
    api, src, private = sendgrid_relay
    mail = await send_and_relay(api, smtp, "order-78")
    await wait_until(lambda: types_of(api, "order-78", "sent"))
    event = {"event": "open", "email": "ann@example.com", "timestamp": int(time.time()), "sg_event_id": "o-1",
             "sg_message_id": "abc.filter0001", "smtp-id": mail["Message-ID"]}  # fmt: skip
    body = orjson.dumps([event])
    assert (await source_post(api, src, body, signed(private, body)))[0] == 200
    assert sorted(await types_of(api, "order-78", "sent", "opened") or []) == ["opened", "queued", "sent"]


async def test_without_a_tag_or_a_known_message_id_the_providers_message_id_is_the_messagekey(sendgrid_relay):
    api, src, private = sendgrid_relay
    event = {"event": "delivered", "email": "bob@example.com", "timestamp": int(time.time()), "sg_event_id": "x-1",
             "sg_message_id": "direct123.filter0001", "smtp-id": "<unknown@example.com>"}  # fmt: skip
    body = orjson.dumps([event])
    assert (await source_post(api, src, body, signed(private, body)))[0] == 200
    assert await types_of(api, "direct123", "delivered") == ["delivered"]


async def test_a_header_the_sender_set_is_kept_over_the_providers(database, settings, aiohttp_client, smtp):
    api = await relay_api(database, settings, aiohttp_client, smtp, "postmark")
    status, body = await api.post("/v1/messages/order-80", {
        "recipient": {"to": "ann@example.com"}, "from": "shop@example.com", "subject": "Hi", "text": "Hi",
        "headers": {"X-PM-Metadata-messageKey": "chosen-by-app"},
    })  # fmt: skip
    assert status == 202, body

    async def relayed() -> Any:
        return smtp[0].received[-1] if smtp[0].received else None

    mail = message_from_bytes((await wait_until(relayed)).content, policy=policy.default)
    assert mail.get_all("X-PM-Metadata-messageKey") == ["chosen-by-app"]
