"""The send endpoint end to end: definitions, sends, a real SMTP server (aiosmtpd), tracking links
followed over HTTP, and the resulting events reaching a subscribed callback."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from datetime import datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dispatcher.crypto import load_keyring
from dispatcher.runtime import create_app
from dispatcher.sending.sender import MailSender
from dispatcher.sending.transport import MaildirTransport
from tests.conftest import Api, make_key, setup_callback, wait_until
from tests.integration.test_smtp_transport import free_port
from tests.receiver import Receiver

DEFINITION = {
    "definitionKey": "receipt",
    "name": "Order receipt",
    "content": {
        "from": "Shop <shop@example.com>",
        "subject": "Your order {{ attributes.order }}",
        "html": '<html><body><p>Hi {{ attributes.name }}</p><a href="https://shop.example.com/o/{{ attributes.order }}">view</a></body></html>',
        "text": "Hi {{ attributes.name }}, order {{ attributes.order }}",
    },
}


@pytest.fixture
async def send_api(database, settings, aiohttp_client, smtp) -> Api:
    _, port = smtp
    http_port = free_port()
    s = settings.model_copy(update={
        "mail_url": f"smtp://127.0.0.1:{port}?timeout=5", "public_url": f"http://127.0.0.1:{http_port}",
        "mail_retry_schedule": [0.3, 0.3], "inactive_definition_expiry": 3600.0,
    })  # fmt: skip
    client = await aiohttp_client(create_app(s, database=database), server_kwargs={"port": http_port})
    return Api(client, await make_key(database, "acme"))


def received(smtp: Any) -> list[Any]:
    return [message_from_bytes(r.content, policy=policy.default) for r in smtp[0].received]


async def message(api: Api, key: str, **q: str) -> dict[str, Any]:
    status, body = await api.get(
        f"/v1/messages/{key}" + ("?" + "&".join(f"{k}={v}" for k, v in q.items()) if q else "")
    )
    assert status == 200, body
    return body


async def timeline_has(api: Api, key: str, *types: str) -> bool:
    status, body = await api.get(f"/v1/messages/{key}")
    return status == 200 and all(t in [e["type"] for e in body["events"]] for t in types)


async def wait_types(api: Api, key: str, *types: str) -> dict[str, Any]:
    await wait_until(lambda: timeline_has(api, key, *types))
    return await message(api, key)


# --- definitions ----------------------------------------------------------------------------------


async def test_definition_crud(send_api: Api):
    status, body = await send_api.post("/v1/definitions", DEFINITION)
    assert status == 201 and body["status"] == "active" and body["options"]["tracked"] is True
    assert (await send_api.post("/v1/definitions", DEFINITION))[0] == 409
    status, body = await send_api.patch("/v1/definitions/receipt", {"status": "inactive", "description": "v2"})
    assert status == 200 and body["status"] == "inactive" and body["description"] == "v2"
    assert [d["definitionKey"] for d in (await send_api.get("/v1/definitions"))[1]["definitions"]] == ["receipt"]
    assert (await send_api.delete("/v1/definitions/receipt"))[0] == 204
    assert (await send_api.get("/v1/definitions/receipt"))[0] == 404


async def test_template_syntax_error_is_a_400_naming_the_field(send_api: Api, database):
    bad = {**DEFINITION, "content": {**DEFINITION["content"], "subject": "Hi {{ attributes.name "}}
    status, body = await send_api.post("/v1/definitions", bad)
    assert status == 400 and body["error"]["field"] == "content.subject"
    assert await database.pool.fetchval("SELECT count(*) FROM definitions") == 0


async def test_definition_creation_quota_per_rolling_week(database, settings, aiohttp_client):
    client = await aiohttp_client(create_app(settings.model_copy(update={"definition_quota": 2}), database=database))
    api = Api(client, await make_key(database, "acme"))
    for i in range(2):
        assert (await api.post("/v1/definitions", {**DEFINITION, "definitionKey": f"d{i}", "name": f"n{i}"}))[0] == 201
    await api.delete("/v1/definitions/d0")  # deleting does not give the quota back
    status, body = await api.post("/v1/definitions", {**DEFINITION, "definitionKey": "d2", "name": "n2"})
    assert status == 429 and "7 days" in body["error"]["message"]


# --- sending --------------------------------------------------------------------------------------


async def test_send_renders_the_definition_and_delivers_over_smtp(send_api: Api, smtp):
    await send_api.post("/v1/definitions", DEFINITION)
    attachment = base64.b64encode(b"%PDF-1.4 invoice").decode()
    status, body = await send_api.post("/v1/messages/order-1", {
        "definitionKey": "receipt",
        "recipient": {"to": "ann@example.com", "contactKey": "c-1", "attributes": {"name": "Ann <3", "order": "1001"}},
        "bcc": ["audit@example.com"], "headers": {"X-Campaign": "spring"}, "attachments": {"invoice.pdf": attachment},
    })  # fmt: skip
    assert (status, body) == (202, {"messageKey": "order-1", "status": "queued"})
    history = await wait_types(send_api, "order-1", "queued", "sent")
    assert history["status"] == "sent" and history["send"]["status"] == "sent"
    [mail] = received(smtp)
    assert mail["Subject"] == "Your order 1001"
    assert mail["To"] == "ann@example.com" and "Bcc" not in mail
    assert smtp[0].received[0].rcpt_tos == ["ann@example.com", "audit@example.com"]
    assert mail["X-Campaign"] == "spring"
    assert mail["List-Unsubscribe"].startswith("<http://127.0.0.1:") and "/t/u/" in mail["List-Unsubscribe"]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = mail.get_body(("html",)).get_content()
    assert "Hi Ann &lt;3" in html  # attributes are escaped in HTML
    assert "/t/o/" in html and "/t/c/" in html and "https://shop.example.com/o/1001" not in html
    assert mail.get_body(("plain",)).get_content().strip() == "Hi Ann <3, order 1001"
    [att] = list(mail.iter_attachments())
    assert att.get_filename() == "invoice.pdf" and att.get_content() == b"%PDF-1.4 invoice"
    content = (await message(send_api, "order-1", include="content"))["content"]
    assert content["subject"] == "Your order 1001"


async def test_send_without_definition_needs_from_subject_and_body(send_api: Api, smtp, database):
    status, body = await send_api.post("/v1/messages/raw-1", {"recipient": {"to": "bob@example.com"}, "subject": "x"})
    assert status == 400 and body["error"]["field"] == "from"
    assert await database.pool.fetchval("SELECT count(*) FROM messages") == 0
    status, _ = await send_api.post("/v1/messages/raw-1", {
        "recipient": {"to": "bob@example.com"}, "from": "a@example.com", "subject": "plain", "text": "hello"})  # fmt: skip
    assert status == 202
    await wait_types(send_api, "raw-1", "sent")
    assert received(smtp)[0].get_body(("plain",)).get_content().strip() == "hello"


async def test_disabled_message_retention_never_stores_the_body(send_api: Api, smtp, database):
    await send_api.post("/v1/definitions", DEFINITION)
    await send_api.post("/v1/messages/secret-1", {"definitionKey": "receipt", "disableMessageRetention": True,
                        "recipient": {"to": "ann@example.com", "attributes": {"name": "Ann", "order": "7"}}})  # fmt: skip
    await wait_types(send_api, "secret-1", "sent")
    assert (await message(send_api, "secret-1", include="content"))["content"] is None
    row = await database.pool.fetchrow("SELECT request, rendered FROM messages WHERE message_key = 'secret-1'")
    assert row["rendered"] is None and "Ann" not in str(row["request"])


BAD_SENDS = [
    ({"recipient": {"to": "not-an-address"}}, "recipient.to"),
    ({"recipient": {"to": "a@example.com"}, "bcc": [f"b{i}@example.com" for i in range(15)]}, "bcc"),
    ({"recipient": {"to": "a@example.com"}, "bcc": ["bad address"]}, "bcc[0]"),
    (
        {"recipient": {"to": "a@example.com"}, "attachments": {"run.exe": base64.b64encode(b"MZ").decode()}},
        "attachments",
    ),
    ({"recipient": {"to": "a@example.com"}, "attachments": {"a.txt": "***not base64***"}}, "attachments"),
    ({"recipient": {"to": "a@example.com"}, "headers": {"Subject": "sneaky"}}, "headers"),
    ({"recipient": {"to": "a@example.com"}, "headers": {"X Bad": "v"}}, "headers"),
    ({"recipient": {"to": "a@example.com"}, "headers": {"X-Inject": "a\r\nBcc: evil@example.com"}}, "headers"),
    ({"recipient": {"to": "a@example.com"}, "sendAt": int(time.time()) + 91 * 86400}, "sendAt"),
    ({"recipient": {"to": "a@example.com"}, "sendAt": "tomorrow"}, "sendAt"),
    ({"recipient": {"to": "a@example.com"}, "surprise": True}, "surprise"),
]


@pytest.mark.parametrize(("extra", "field"), BAD_SENDS)
async def test_invalid_send_is_a_400_naming_the_field_and_nothing_is_stored_or_sent(
    send_api: Api, smtp, database, extra, field
):
    body = {"from": "shop@example.com", "subject": "s", "text": "t", **extra}
    status, answer = await send_api.post("/v1/messages/bad-1", body)
    assert status in (400, 413), answer
    if field is not None:
        assert answer["error"]["field"].startswith(field), answer
    assert await database.pool.fetchval("SELECT count(*) FROM messages") == 0
    assert await database.pool.fetchval("SELECT count(*) FROM events") == 0
    assert smtp[0].received == []


async def test_attachments_over_2_mb_in_total_are_refused(send_api: Api, smtp, database):
    import io
    import json

    big = base64.b64encode(b"x" * 1_100_000).decode()
    body = {"from": "s@example.com", "subject": "s", "text": "t", "recipient": {"to": "a@example.com"},
            "attachments": {"a.bin": big, "b.bin": big}}  # fmt: skip
    headers = {"Authorization": f"Bearer {send_api.key}", "Content-Type": "application/json"}
    resp = await send_api.client.post("/v1/messages/big-1", data=io.BytesIO(json.dumps(body).encode()), headers=headers)
    answer = await resp.json()
    assert resp.status == 400 and answer["error"]["field"] == "attachments", answer
    assert await database.pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_concurrent_sends_each_get_their_own_answer_and_a_key_is_taken_once_per_account(
    send_api: Api, smtp, database
):
    """Sends that arrive together are committed together (group commit), yet each keeps its own answer."""
    other = Api(send_api.client, await make_key(database, "globex"))
    send = {"recipient": {"to": "a@example.com"}, "from": "s@example.com", "subject": "s", "text": "t"}
    posts = [(api, f"/v1/messages/{key}") for key in ["same"] * 6 + [f"own-{i}" for i in range(10)]
             for api in (send_api, other)]  # fmt: skip
    results = await asyncio.gather(*(api.post(path, send) for api, path in posts))
    for api in (send_api, other):
        mine = [(path, status) for (a, path), (status, _) in zip(posts, results, strict=True) if a is api]
        assert sorted(status for path, status in mine if path.endswith("same")) == [202] + [409] * 5
        assert all(status == 202 for path, status in mine if not path.endswith("same"))
    assert await database.pool.fetchval("SELECT count(*) FROM messages WHERE message_key = 'same'") == 2
    # one queued event per accepted message, in its own account; and each is sent once
    assert await database.pool.fetchval("SELECT count(DISTINCT (account_id, message_key)) FROM events") == 22

    async def all_sent() -> bool:
        return await database.pool.fetchval("SELECT count(*) FROM events WHERE type = 'sent'") == 22

    await wait_until(all_sent)
    assert len(smtp[0].received) == 22


async def test_message_key_rules_unknown_definition_and_duplicates(send_api: Api, smtp, database):
    send = {"recipient": {"to": "a@example.com"}, "from": "s@example.com", "subject": "s", "text": "t"}
    assert (await send_api.post("/v1/messages/" + "k" * 101, send))[0] == 400
    status, body = await send_api.post(
        "/v1/messages/m-1", {"definitionKey": "nope", "recipient": {"to": "a@example.com"}}
    )
    assert status == 404
    assert (await send_api.post("/v1/messages/m-1", send))[0] == 202
    status, body = await send_api.post("/v1/messages/m-1", send)
    assert status == 409 and body["error"]["status"] in ("queued", "sent")
    await wait_types(send_api, "m-1", "sent")
    assert len(smtp[0].received) == 1


async def test_permanent_rejection_records_a_hard_bounce(send_api: Api, smtp):
    smtp[0].rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    await send_api.post(
        "/v1/messages/b-1",
        {"recipient": {"to": "gone@example.com"}, "from": "s@example.com", "subject": "s", "text": "t"},
    )
    history = await wait_types(send_api, "b-1", "bounced")
    bounce = [e for e in history["events"] if e["type"] == "bounced"][0]["data"]
    assert bounce["bounceType"] == "hard" and bounce["smtpCode"] == 550 and "no such user" in bounce["reason"]
    assert history["status"] == "bounced"


async def test_temporary_failure_is_deferred_and_retried(send_api: Api, smtp):
    smtp[0].rcpt_replies["later@example.com"] = "451 4.7.1 try again"
    await send_api.post(
        "/v1/messages/d-1",
        {"recipient": {"to": "later@example.com"}, "from": "s@example.com", "subject": "s", "text": "t"},
    )
    await wait_types(send_api, "d-1", "deferred")
    del smtp[0].rcpt_replies["later@example.com"]
    history = await wait_types(send_api, "d-1", "sent")
    assert history["status"] == "sent"
    assert len(smtp[0].received) == 1


async def test_drafts_wait_until_sent_or_discarded(send_api: Api, smtp):
    send = {
        "recipient": {"to": "a@example.com"},
        "from": "s@example.com",
        "subject": "s",
        "text": "t",
        "queueDraft": True,
    }
    assert (await send_api.post("/v1/messages/draft-1", send))[1]["status"] == "draft"
    assert (await send_api.post("/v1/messages/draft-2", send))[1]["status"] == "draft"
    assert (await message(send_api, "draft-1"))["status"] == "draft"
    assert (await send_api.delete("/v1/messages/draft-2"))[0] == 204
    assert (await send_api.get("/v1/messages/draft-2"))[0] == 404
    assert smtp[0].received == []
    status, body = await send_api.post("/v1/messages/draft-1/send")
    assert status == 202 and body["status"] == "queued"
    await wait_types(send_api, "draft-1", "sent")
    assert (await send_api.delete("/v1/messages/draft-1"))[0] == 409


async def test_scheduled_send_waits_for_its_time(send_api: Api, smtp):
    send_at = int(time.time()) + 3
    send = {"recipient": {"to": "a@example.com"}, "from": "s@example.com", "subject": "s", "text": "t",
            "sendAt": send_at}  # fmt: skip
    status, body = await send_api.post("/v1/messages/later-1", send)
    assert body["status"] == "scheduled"
    assert (await message(send_api, "later-1"))["status"] == "scheduled"
    timeline = (await wait_types(send_api, "later-1", "sent"))["events"]
    sent = next(e for e in timeline if e["type"] == "sent")
    assert datetime.fromisoformat(sent["recordedAt"]).timestamp() >= send_at
    assert len(smtp[0].received) == 1
    past = {**send, "sendAt": "2020-01-01T00:00:00Z"}
    assert (await send_api.post("/v1/messages/now-1", past))[1]["status"] == "queued"


async def test_inactive_definition_keeps_the_send_queued_until_activated(send_api: Api, smtp):
    await send_api.post("/v1/definitions", {**DEFINITION, "status": "inactive"})
    await send_api.post(
        "/v1/messages/wait-1",
        {"definitionKey": "receipt", "recipient": {"to": "a@example.com", "attributes": {"order": "1"}}},
    )
    await wait_until(lambda: _claimed_once(send_api, "wait-1"))
    assert smtp[0].received == [] and (await message(send_api, "wait-1"))["status"] == "queued"
    await send_api.patch("/v1/definitions/receipt", {"status": "active"})
    await wait_types(send_api, "wait-1", "sent")


async def _claimed_once(api: Api, key: str) -> bool:
    body = await message(api, key)
    return body["send"]["status"] == "queued"


async def test_send_to_a_definition_inactive_too_long_fails(database, settings, aiohttp_client, smtp):
    s = settings.model_copy(update={"mail_url": f"smtp://127.0.0.1:{smtp[1]}", "inactive_definition_expiry": 0.0})
    api = Api(await aiohttp_client(create_app(s, database=database)), await make_key(database, "acme"))
    await api.post("/v1/definitions", {**DEFINITION, "status": "inactive"})
    await api.post("/v1/messages/exp-1", {"definitionKey": "receipt", "recipient": {"to": "a@example.com"}})
    history = await wait_types(api, "exp-1", "failed")
    failed = [e for e in history["events"] if e["type"] == "failed"][0]["data"]
    assert failed["statusCode"] == 2 and "inactive" in failed["reason"]


async def test_batch_send_accepts_valid_recipients_and_reports_the_rest(send_api: Api, smtp):
    await send_api.post("/v1/definitions", DEFINITION)
    await send_api.post("/v1/messages/taken", {"definitionKey": "receipt", "recipient": {"to": "x@example.com"}})
    status, body = await send_api.post("/v1/messages", {"definitionKey": "receipt", "attributes": {"order": "9"}, "recipients": [
        {"to": "one@example.com", "messageKey": "batch-1", "attributes": {"name": "One"}},
        {"to": "broken"},
        {"to": "two@example.com"},
        {"to": "three@example.com", "messageKey": "taken"},
    ]})  # fmt: skip
    assert status == 202 and body["accepted"] == 2 and body["failed"] == 2
    r = body["responses"]
    assert r[0] == {"index": 0, "messageKey": "batch-1", "status": "queued"}
    assert r[1]["error"]["field"] == "recipients[1].to"
    assert r[2]["status"] == "queued" and r[2]["messageKey"]
    assert r[3]["error"]["code"] == "conflict"
    await wait_types(send_api, "batch-1", "sent")
    await wait_types(send_api, r[2]["messageKey"], "sent")


# --- tracking -------------------------------------------------------------------------------------


def links(mail: Any) -> dict[str, str]:
    html = mail.get_body(("html",)).get_content()
    found = {"unsubscribe": mail["List-Unsubscribe"].strip("<>")}
    for name, pattern in (("click", r'href="([^"]*/t/c/[^"]+)"'), ("open", r'src="([^"]*/t/o/[^"]+)"')):
        if m := re.search(pattern, html):
            found[name] = m.group(1)
    return found


async def test_following_a_tracked_link_records_clicked_and_the_webhook_arrives_signed(
    send_api: Api, smtp, receiver: Receiver
):
    _, secret = await setup_callback(send_api, receiver, event_types=["clicked", "opened"])
    await send_api.post("/v1/definitions", DEFINITION)
    await send_api.post("/v1/messages/track-1", {"definitionKey": "receipt",
                        "recipient": {"to": "ann@example.com", "attributes": {"name": "Ann", "order": "42"}}})  # fmt: skip
    await wait_types(send_api, "track-1", "sent")
    urls = links(received(smtp)[0])
    async with aiohttp.ClientSession() as http:
        async with http.get(urls["click"], allow_redirects=False, headers={"User-Agent": "MailClient/1.0"}) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "https://shop.example.com/o/42"
        async with http.get(urls["open"]) as resp:
            assert resp.status == 200 and resp.content_type == "image/gif"
        tampered = urls["click"][:-3] + ("AAA" if not urls["click"].endswith("AAA") else "BBB")
        async with http.get(tampered, allow_redirects=False) as resp:
            assert resp.status == 404
    history = await wait_types(send_api, "track-1", "queued", "sent", "clicked", "opened")
    clicked = [e for e in history["events"] if e["type"] == "clicked"]
    assert len(clicked) == 1 and clicked[0]["data"]["url"] == "https://shop.example.com/o/42"
    assert clicked[0]["data"]["userAgent"] == "MailClient/1.0" and clicked[0]["data"]["ipAddress"] == "127.0.0.1"
    got = await receiver.wait_for(2)
    payloads = [r.verify(secret) for r in got]
    assert {p["type"] for p in payloads} == {"clicked", "opened"}
    assert all(p["data"]["messageKey"] == "track-1" for p in payloads)


async def test_one_click_unsubscribe_suppresses_later_sends(send_api: Api, smtp):
    send = {"recipient": {"to": "Ann@Example.com"}, "from": "s@example.com", "subject": "s", "html": "<p>hi</p>"}
    await send_api.post("/v1/messages/u-1", send)
    await wait_types(send_api, "u-1", "sent")
    url = links(received(smtp)[0])["unsubscribe"]
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:  # a link scanner's GET changes nothing
            assert resp.status == 200
        assert not await timeline_has(send_api, "u-1", "unsubscribed")
        async with http.post(url, data={"List-Unsubscribe": "One-Click"}) as resp:
            assert resp.status == 200
    await wait_types(send_api, "u-1", "unsubscribed")
    await send_api.post("/v1/messages/u-2", send)
    history = await wait_types(send_api, "u-2", "failed")
    assert [e for e in history["events"] if e["type"] == "failed"][0]["data"]["statusCode"] == 1
    await send_api.post("/v1/messages/u-3", {**send, "sendToUnsubscribed": True})
    await wait_types(send_api, "u-3", "sent")
    assert len(smtp[0].received) == 2


async def test_without_a_mail_url_messages_land_as_eml_files(database, settings, aiohttp_client, tmp_path: Path):
    api = Api(await aiohttp_client(create_app(settings.model_copy(update={"data_dir": tmp_path}), database=database)),
              await make_key(database, "acme"))  # fmt: skip
    await api.post(
        "/v1/messages/file-1",
        {"recipient": {"to": "a@example.com"}, "from": "s@example.com", "subject": "on disk", "text": "t"},
    )
    await wait_types(api, "file-1", "sent")
    [eml] = list((tmp_path / "mail").glob("*.eml"))
    assert message_from_bytes(eml.read_bytes(), policy=policy.default)["Subject"] == "on disk"


class RecordingMaildir(MaildirTransport):
    """The real maildir transport, remembering how many files each group write held."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.groups: list[int] = []

    async def _write(self, files: list[tuple[str, bytes]]) -> None:
        self.groups.append(len(files))
        await super()._write(files)


async def test_messages_claimed_together_are_written_to_the_maildir_as_one_group(
    database, settings, aiohttp_client, tmp_path: Path
):
    """Every group write flushes the filesystem twice: a claim of 40 messages pays for that once, not
    once per slice of the SMTP concurrency (which limits connections to a relay, not files)."""
    s = settings.model_copy(update={"data_dir": tmp_path, "sender_concurrency": 5})
    api = Api(await aiohttp_client(create_app(s, database=database, role="api")), await make_key(database, "acme"))
    recipients = [{"to": f"r{i}@example.com", "messageKey": f"group-{i}"} for i in range(40)]
    await api.post("/v1/definitions", DEFINITION)
    status, body = await api.post("/v1/messages", {"definitionKey": "receipt", "recipients": recipients,
                                                   "attributes": {"order": "9", "name": "R"}})  # fmt: skip
    assert status == 202 and body["accepted"] == 40, body
    transport = RecordingMaildir(tmp_path / "mail")
    sender = MailSender(database, s, load_keyring(s), transport=transport)

    async def all_sent() -> bool:
        return await database.pool.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'") == 40

    await sender.start()
    try:
        await wait_until(all_sent)
    finally:
        await sender.stop()
    assert transport.groups == [40]
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 40
