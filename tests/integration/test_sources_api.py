"""Managing sources: create, list, get, change and delete them; secrets encrypted at rest and never shown
again; one account never sees another's; a key without `callbacks:manage` manages none."""

from __future__ import annotations

import hashlib
import hmac
import time

import orjson

from tests.conftest import Api, make_key
from tests.integration.sources import event_count, source_post
from tests.integration.test_source_sendgrid import keypair, sendgrid_events, signed

SIGNING_KEY = "key-5d4a6f2b7c9e1d3a8b0c4e6f1a2b3c4d"


def mailgun_body(signing_key: str = SIGNING_KEY, token: str = "t" * 50) -> bytes:
    ts = str(int(time.time()))
    signature = hmac.new(signing_key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return orjson.dumps({
        "signature": {"timestamp": ts, "token": token, "signature": signature},
        "event-data": {"id": "mg-evt-1", "event": "delivered", "timestamp": time.time(), "recipient": "a@example.com",
                       "message": {"headers": {"message-id": "mg-1@example.com"}}, "user-variables": {}},
    })  # fmt: skip


async def test_a_source_is_created_with_its_public_url_and_its_secret_is_never_shown(api: Api, database):
    status, src = await api.post("/v1/sources", {"name": "mg", "provider": "mailgun", "description": "EU domain",
                                                 "config": {"signingKey": SIGNING_KEY}})  # fmt: skip
    assert status == 201, src
    assert src["sourceId"].startswith("src_") and src["provider"] == "mailgun" and src["description"] == "EU domain"
    assert src["url"] == f"http://127.0.0.1:1/in/{src['sourceId']}"  # DISPATCHER_PUBLIC_URL of the test settings
    assert src["config"] == {} and src["secretsSet"] == ["signingKey"]
    for answer in [(await api.get(f"/v1/sources/{src['sourceId']}"))[1], (await api.get("/v1/sources"))[1]]:
        assert SIGNING_KEY not in orjson.dumps(answer).decode()
    stored = await database.pool.fetchrow("SELECT config::text, secrets_enc FROM sources")
    assert SIGNING_KEY not in stored["config"] and SIGNING_KEY.encode() not in bytes(stored["secrets_enc"])


async def test_a_source_is_listed_changed_and_deleted(api: Api):
    _, public = keypair()
    status, src = await api.post("/v1/sources", {"name": "sg", "provider": "sendgrid", "config": {"publicKey": public}})
    assert status == 201, src
    status, listed = await api.get("/v1/sources")
    assert status == 200 and [s["sourceId"] for s in listed["sources"]] == [src["sourceId"]]
    _, other_public = keypair()
    status, changed = await api.patch(f"/v1/sources/{src['sourceId']}",
                                      {"name": "sendgrid-eu", "config": {"publicKey": other_public}})  # fmt: skip
    assert status == 200, changed
    assert changed["name"] == "sendgrid-eu" and changed["config"] == {"publicKey": other_public}
    assert (await api.delete(f"/v1/sources/{src['sourceId']}"))[0] == 204
    assert (await api.get(f"/v1/sources/{src['sourceId']}"))[0] == 404


async def test_a_changed_key_takes_effect_at_once(api: Api, database):
    private, public = keypair()
    _, src = await api.post("/v1/sources", {"name": "sg", "provider": "sendgrid", "config": {"publicKey": public}})
    new_private, new_public = keypair()
    assert (await api.patch(f"/v1/sources/{src['sourceId']}", {"config": {"publicKey": new_public}}))[0] == 200
    body = orjson.dumps(sendgrid_events())
    assert (await source_post(api, src, body, signed(private, body)))[0] == 401
    assert await event_count(database) == 0
    assert (await source_post(api, src, body, signed(new_private, body)))[0] == 200


async def test_a_deleted_source_refuses_its_provider_with_404(api: Api, database):
    private, public = keypair()
    _, src = await api.post("/v1/sources", {"name": "sg", "provider": "sendgrid", "config": {"publicKey": public}})
    assert (await api.delete(f"/v1/sources/{src['sourceId']}"))[0] == 204
    body = orjson.dumps(sendgrid_events())
    assert (await source_post(api, src, body, signed(private, body)))[0] == 404
    assert await event_count(database) == 0


async def test_bad_source_bodies_name_the_innermost_field(api: Api):
    cases = [
        ({"name": "x", "provider": "smtp2go", "config": {}}, "provider"),
        ({"name": "x", "provider": "sendgrid", "config": {}}, "config.publicKey"),
        ({"name": "x", "provider": "sendgrid", "config": {"publicKey": "bm90IGEga2V5"}}, "config.publicKey"),
        ({"name": "x", "provider": "mailgun", "config": {"signingKey": SIGNING_KEY, "extra": 1}}, "config.extra"),
        ({"name": "", "provider": "mailgun", "config": {"signingKey": SIGNING_KEY}}, "name"),
    ]
    for body, field in cases:
        status, answer = await api.post("/v1/sources", body)
        assert status == 400 and answer["error"]["field"] == field, (body, answer)
    _, src = await api.post("/v1/sources", {"name": "mg", "provider": "mailgun", "config": {"signingKey": SIGNING_KEY}})
    status, answer = await api.patch(f"/v1/sources/{src['sourceId']}", {"config": {"signingKey": 5}})
    assert status == 400 and answer["error"]["field"] == "config.signingKey", answer


async def test_a_second_source_with_the_same_name_is_a_conflict(api: Api):
    body = {"name": "mg", "provider": "mailgun", "config": {"signingKey": SIGNING_KEY}}
    assert (await api.post("/v1/sources", body))[0] == 201
    status, answer = await api.post("/v1/sources", body)
    assert status == 409 and answer["error"]["field"] == "name"


async def test_one_account_never_sees_or_changes_another_accounts_sources(api: Api, other_api: Api):
    _, src = await api.post("/v1/sources", {"name": "mg", "provider": "mailgun", "config": {"signingKey": SIGNING_KEY}})
    sid = src["sourceId"]
    assert (await other_api.get(f"/v1/sources/{sid}"))[0] == 404
    assert (await other_api.patch(f"/v1/sources/{sid}", {"name": "mine"}))[0] == 404
    assert (await other_api.delete(f"/v1/sources/{sid}"))[0] == 404
    assert (await other_api.get("/v1/sources"))[1] == {"sources": []}
    assert (await api.get(f"/v1/sources/{sid}"))[1]["name"] == "mg"


async def test_managing_sources_needs_the_callbacks_manage_scope(api: Api, database):
    reader = await make_key(database, "acme", ["events:read"])
    status, answer = await api.post("/v1/sources", {"name": "mg", "provider": "mailgun",
                                                    "config": {"signingKey": SIGNING_KEY}}, key=reader)  # fmt: skip
    assert status == 403, answer
    assert (await api.get("/v1/sources", key=reader))[0] == 403


async def test_the_ingest_address_takes_no_api_key_only_the_providers_authentication(api: Api, database):
    _, src = await api.post("/v1/sources", {"name": "mg", "provider": "mailgun", "config": {"signingKey": SIGNING_KEY}})
    forged = mailgun_body(signing_key="not-the-key")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api.key}"}
    assert (await source_post(api, src, forged, headers))[0] == 401
    assert await event_count(database) == 0
    assert (await source_post(api, src, mailgun_body(), {"Content-Type": "application/json"}))[0] == 200
    assert await event_count(database) == 1


async def test_refusals_and_ignored_events_are_counted_in_metrics_and_logged_without_the_secret(
    database, settings, aiohttp_client, capsys
):
    from dispatcher.runtime import create_app

    client = await aiohttp_client(create_app(settings.model_copy(update={"metrics_token": "m-token"}),
                                             database=database))  # fmt: skip
    api = Api(client, await make_key(database, "acme"))
    _, src = await api.post("/v1/sources", {"name": "mg", "provider": "mailgun", "config": {"signingKey": SIGNING_KEY}})
    assert (await source_post(api, src, mailgun_body(signing_key="wrong"), {"Content-Type": "application/json"}))[
        0
    ] == 401
    private, public = keypair()
    _, sg = await api.post("/v1/sources", {"name": "sg", "provider": "sendgrid", "config": {"publicKey": public}})
    body = orjson.dumps(sendgrid_events())
    assert (await source_post(api, sg, body, signed(private, body)))[0] == 200
    resp = await client.get("/metrics", headers={"Authorization": "Bearer m-token"})
    text = await resp.text()
    assert 'dispatcher_inbound_refused_total{provider="mailgun",reason="invalid_signature"} 1.0' in text
    assert 'dispatcher_inbound_events_total{outcome="recorded",provider="sendgrid"} 5.0' in text
    assert 'dispatcher_inbound_events_total{outcome="ignored",provider="sendgrid"} 1.0' in text
    logged = capsys.readouterr()
    assert "provider request refused" in logged.out + logged.err
    assert SIGNING_KEY not in logged.out + logged.err
