"""Marketing Cloud's auth, Content Builder subset and Transactional Messaging API, driven as a Marketing Cloud
client drives them: the `pysfmc` package (its auth base URL pointed at dispatcher), a real SMTP server, and
plain HTTP where a test reads the raw answer."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from dispatcher import accounts
from dispatcher.runtime import create_app
from tests.conftest import wait_until
from tests.integration.test_send_api import received
from tests.integration.test_smtp_transport import free_port

pysfmc = pytest.importorskip("pysfmc")
from pysfmc import AsyncSFMCClient  # noqa: E402
from pysfmc.auth import AsyncSFMCAuthenticator, SFMCSettings  # noqa: E402
from pysfmc.exceptions import SFMCAuthenticationError, SFMCError  # noqa: E402

SENDER = "Shop <shop@example.com>"
VIEWS = {
    "html": {"content": "<html><body><p>Hi %%FirstName%%, order {{ attributes.order }}</p></body></html>"},
    "subjectline": {"content": "Your order %%order%%"},
    "text": {"content": "Hi %%FirstName%%"},
}


class DispatcherSettings(SFMCSettings):
    """pysfmc's settings with the auth base URL at dispatcher instead of <subdomain>.auth.marketingcloudapis.com."""

    base_url: str

    @property
    def auth_base_url(self) -> SecretStr:
        return SecretStr(self.base_url)


class Service:
    def __init__(self, base: str, key: str, key_id: int, account_id: int):
        self.base, self.key, self.key_id, self.account_id = base, key, key_id, account_id

    def settings(self, **override: str) -> DispatcherSettings:
        values = {"client_id": self.key[:10], "client_secret": self.key, "account_id": str(self.account_id),
                  "subdomain": "unused", "base_url": self.base} | override  # fmt: skip
        return DispatcherSettings(**values)

    def client(self, **override: str) -> AsyncSFMCClient:
        return AsyncSFMCClient(settings=self.settings(**override))

    async def http(self, method: str, path: str, token: str, json: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.base + path, json=json, headers={"Authorization": f"Bearer {token}"}) as resp,
        ):
            return resp.status, await resp.json()


@pytest.fixture
async def mc(database, settings, aiohttp_client, smtp) -> Service:
    _, smtp_port = smtp
    port = free_port()
    s = settings.model_copy(update={
        "mail_url": f"smtp://127.0.0.1:{smtp_port}?timeout=5", "public_url": f"http://127.0.0.1:{port}",
        "definition_quota": 3,
    })  # fmt: skip
    await aiohttp_client(create_app(s, database=database), server_kwargs={"port": port})
    async with database.pool.acquire() as conn:
        account = await accounts.create_account(conn, "acme")
        key_id, key = await accounts.create_key(conn, account["id"], ["messages:send"])
    return Service(f"http://127.0.0.1:{port}", key, key_id, account["id"])


async def setup_definition(client: AsyncSFMCClient, key: str = "receipt", asset: str = "receipt-email") -> None:
    await client.assets.content.create_asset(
        name=f"Receipt {asset}", asset_type_name="htmlemail", asset_type_id=208, customer_key=asset, views=VIEWS
    )
    await client.post("/messaging/v1/email/definitions", json={
        "definitionKey": key, "name": f"Receipt {key}", "classification": SENDER,
        "content": {"customerKey": asset}, "subscriptions": {"list": "All Subscribers"}, "options": {"trackLinks": False},
    })  # fmt: skip


async def test_pysfmc_gets_a_token_creates_an_asset_and_definition_sends_and_reads_the_status(mc, smtp, database):
    authenticator = AsyncSFMCAuthenticator(mc.settings())
    token = await authenticator.get_token()
    assert token.startswith("dat_")
    assert await authenticator.get_rest_base_url() == mc.base + "/"
    await authenticator.close()

    async with mc.client() as client:
        asset = await client.assets.content.create_asset(
            name="Receipt", asset_type_name="htmlemail", asset_type_id=208, customer_key="receipt-email", views=VIEWS
        )
        assert asset.customer_key == "receipt-email" and asset.asset_type.name == "htmlemail"
        fetched = await client.assets.query.get_asset_by_id(asset.id)
        assert fetched.views["subjectline"].content == "Your order %%order%%"
        definition = await client.post("/messaging/v1/email/definitions", json={
            "definitionKey": "receipt", "name": "Receipt", "classification": SENDER,
            "content": {"customerKey": "receipt-email"}, "subscriptions": {"list": "All Subscribers"},
        })  # fmt: skip
        assert definition["content"] == {"customerKey": "receipt-email"} and definition["status"] == "active"

        sent = await client.post("/messaging/v1/email/messages/order-1", json={
            "definitionKey": "receipt",
            "recipient": {"contactKey": "c-42", "to": "ann@example.com", "attributes": {"FirstName": "Ann", "order": "A1"}},
        })  # fmt: skip
        assert sent["errorcode"] == 0 and sent["responses"] == [{"messageKey": "order-1"}]

        async def is_sent() -> bool:
            status = await client.get("/messaging/v1/email/messages/order-1")
            return status["eventCategoryType"] == "TransactionalSendEvents.EmailSent"

        await wait_until(is_sent)
        status = await client.get("/messaging/v1/email/messages/order-1")
        assert status["info"] == {"messageKey": "order-1", "contactKey": "c-42", "to": "ann@example.com"}
    async with database.pool.acquire() as conn:  # what ENS payloads read as subscriberKey
        data = await conn.fetchval("SELECT data FROM events WHERE message_key = 'order-1' AND type = 'sent'")
    assert data["contactKey"] == "c-42"
    [mail] = received(smtp)
    assert mail["Subject"] == "Your order A1" and mail["From"] == SENDER
    assert "Hi Ann, order A1" in mail.get_body(("html",)).get_content()


async def test_a_duplicate_message_key_is_refused_with_code_109110(mc):
    async with mc.client() as client:
        await setup_definition(client)
        body = {"definitionKey": "receipt", "recipient": {"contactKey": "c", "to": "a@example.com"}}
        await client.post("/messaging/v1/email/messages/dup", json=body)
        with pytest.raises(SFMCError) as refused:
            await client.post("/messaging/v1/email/messages/dup", json=body)
    assert refused.value.status_code == 400
    assert refused.value.response.json()["errorcode"] == 109110


async def test_a_batch_send_accepts_valid_recipients_and_reports_each_failure_with_its_code(mc):
    async with mc.client() as client:
        await setup_definition(client)
        answer = await client.post("/messaging/v1/email/messages", json={
            "definitionKey": "receipt", "attributes": {"order": "B2"},
            "recipients": [{"contactKey": "a", "to": "a@example.com", "messageKey": "b-1"},
                           {"contactKey": "b", "to": "not an address", "messageKey": "b-2"},
                           {"contactKey": "c", "to": "c@example.com"}],
        })  # fmt: skip
    assert answer["errorcode"] == 109001
    assert answer["message"].startswith("MCMS_UTM_ResponsesHasErrors: 1 subscribers failed to queue out of 3")
    first, bad, generated = answer["responses"]
    assert first == {"messageKey": "b-1"}
    assert bad["messageKey"] == "b-2" and bad["errorcode"] == 109121
    assert set(generated) == {"messageKey"} and generated["messageKey"]


async def test_a_definition_patch_reads_the_asset_again_and_status_deleted_deletes_it(mc):
    async with mc.client() as client:
        await setup_definition(client)
        await client.assets.content.create_asset(
            name="Other",
            asset_type_name="htmlemail",
            asset_type_id=208,
            customer_key="other",
            views={"html": {"content": "<p>x</p>"}, "subjectline": {"content": "Other"}},
        )
        patched = await client.patch(
            "/messaging/v1/email/definitions/receipt", json={"content": {"customerKey": "other"}}
        )
        assert patched["content"] == {"customerKey": "other"}
        listed = await client.get("/messaging/v1/email/definitions")
        assert [d["definitionKey"] for d in listed["definitions"]] == ["receipt"]
        deleted = await client.patch("/messaging/v1/email/definitions/receipt", json={"status": "deleted"})
        assert deleted["deletedDefinitionKey"] == "receipt"
        with pytest.raises(SFMCError) as gone:
            await client.get("/messaging/v1/email/definitions/receipt")
    assert gone.value.status_code == 404
    assert set(gone.value.response.json()) == {"message", "errorcode", "documentation"}


async def test_definitions_past_the_seven_day_quota_are_refused(mc):
    async with mc.client() as client:
        await setup_definition(client, "d1")
        for key in ("d2", "d3"):
            await client.post("/messaging/v1/email/definitions", json={
                "definitionKey": key, "name": key, "classification": SENDER, "content": {"customerKey": "receipt-email"}})  # fmt: skip
        with pytest.raises(SFMCError) as refused:
            await client.post("/messaging/v1/email/definitions", json={
                "definitionKey": "d4", "name": "d4", "classification": SENDER, "content": {"customerKey": "receipt-email"}})  # fmt: skip
    assert refused.value.status_code == 429
    assert set(refused.value.response.json()) == {"message", "errorcode", "documentation"}


async def test_a_definition_without_a_sender_mailbox_is_refused_as_a_missing_field(mc):
    async with mc.client() as client:
        await client.assets.content.create_asset(
            name="R", asset_type_name="htmlemail", asset_type_id=208, customer_key="r", views=VIEWS
        )
        with pytest.raises(SFMCError) as refused:
            await client.post("/messaging/v1/email/definitions", json={
                "definitionKey": "r", "name": "r", "content": {"customerKey": "r"}})  # fmt: skip
    assert refused.value.status_code == 400
    assert refused.value.response.json()["errorcode"] == 10002
    assert refused.value.response.json()["message"].startswith("classification")


async def test_wrong_client_credentials_get_an_oauth_error(mc):
    authenticator = AsyncSFMCAuthenticator(mc.settings(client_secret=mc.key[:-1] + "x"))
    with pytest.raises(SFMCAuthenticationError):
        await authenticator.get_token()
    await authenticator.close()
    async with aiohttp.ClientSession() as session, session.post(mc.base + "/v2/token", json={
        "grant_type": "password", "client_id": mc.key[:10], "client_secret": mc.key}) as resp:  # fmt: skip
        assert resp.status == 400
        assert (await resp.json())["error"] == "unsupported_grant_type"


async def test_revoking_the_api_key_ends_its_access_tokens(mc, database):
    authenticator = AsyncSFMCAuthenticator(mc.settings())
    token = await authenticator.get_token()
    await authenticator.close()
    status, _ = await mc.http("GET", "/messaging/v1/email/definitions", token)
    assert status == 200
    async with database.pool.acquire() as conn:
        assert await accounts.revoke_key(conn, mc.key_id)
    status, body = await mc.http("GET", "/messaging/v1/email/definitions", token)
    assert status == 401 and set(body) == {"message", "errorcode", "documentation"}


async def test_an_access_token_is_not_an_api_key_on_the_native_routes(mc):
    authenticator = AsyncSFMCAuthenticator(mc.settings())
    token = await authenticator.get_token()
    await authenticator.close()
    status, _ = await mc.http("GET", "/v1/definitions", token)
    assert status == 401


async def test_assets_are_listed_by_customer_key_filter(mc):
    async with mc.client() as client:
        for key in ("a", "b"):
            await client.assets.content.create_asset(
                name=key, asset_type_name="htmlemail", asset_type_id=208, customer_key=key, views=VIEWS
            )
        page = await client.assets.query.get_assets(filter_expr="customerKey eq 'b'")
    assert page.count == 1 and [a.customer_key for a in page.items] == ["b"]
