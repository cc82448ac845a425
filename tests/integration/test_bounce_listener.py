"""Bounces and complaints by mail: dispatcher sends with a VERP envelope sender through a relay
(aiosmtpd), the reports come back to its inbound SMTP listener over real sockets (aiosmtplib), shaped
the way real mail servers write them, and turn into events on the message's timeline, at the
subscribed callbacks, and suppressions that the next send respects."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from dispatcher.runtime import create_app
from tests.conftest import Api, make_key, setup_callback, wait_until
from tests.e2e.procs import cli, service_env
from tests.integration.test_smtp_transport import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
FIXTURE_VERP = "bounces+7Kq2mB9xT4@mail.example.com"
FIXTURE_MESSAGE_ID = "abc123@example.com"


@pytest.fixture
def listener_port() -> int:
    return free_port()


@pytest.fixture
def settings(settings, smtp, listener_port):
    return settings.model_copy(update={
        "mail_url": f"smtp://127.0.0.1:{smtp[1]}?timeout=5", "bounce_address": "bounces@mail.example.com",
        "inbound_smtp": f"127.0.0.1:{listener_port}", "inbound_max_bytes": 200_000, "inbound_max_connections": 3,
        "metrics_token": "m-token",
    })  # fmt: skip


async def send(api: Api, smtp: Any, key: str, to: str, **extra: Any) -> tuple[str, str]:
    """Send a message through the relay; (the VERP envelope sender, the Message-ID) it went out with."""
    before = len(smtp[0].received)
    body = {"recipient": {"to": to}, "from": "shop@example.com", "subject": "Receipt", "text": "Thanks", **extra}
    status, answer = await api.post(f"/v1/messages/{key}", body)
    assert status == 202, answer

    async def relayed() -> Any:
        return smtp[0].received[before] if len(smtp[0].received) > before else None

    mail = await wait_until(relayed)
    message_id = re.search(rb"^Message-ID: <([^>]+)>", mail.content, re.MULTILINE | re.IGNORECASE)[1].decode()
    return mail.mail_from, message_id


def report(fixture: str, verp: str, message_id: str) -> bytes:
    raw = (FIXTURES / fixture).read_bytes()
    return raw.replace(FIXTURE_VERP.encode(), verp.encode()).replace(FIXTURE_MESSAGE_ID.encode(), message_id.encode())


async def deliver(port: int, raw: bytes, rcpt: str, sender: str = "") -> tuple[int, str]:
    """Hand a mail to the listener as a remote mail server would: (code, message) of the DATA answer,
    or of the first refusal."""
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
            errors, answer = await client.sendmail(sender, [rcpt], raw)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refused = exc.recipients[0]
        return refused.code, refused.message
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    return int(answer.split()[0]) if answer[:3].isdigit() else 250, answer


async def timeline(api: Api, key: str, *wanted: str) -> list[dict[str, Any]] | None:
    _, msg = await api.get(f"/v1/messages/{key}")
    types = [e["type"] for e in msg.get("events", [])]
    return msg["events"] if all(t in types for t in wanted) else None


@pytest.fixture
async def api(database, settings, aiohttp_client) -> Api:
    client = await aiohttp_client(create_app(settings, database=database), server_kwargs={"port": free_port()})
    return Api(client, await make_key(database, "acme"))


async def test_mail_goes_out_from_a_verp_address_naming_the_message(api, smtp):
    verp, _ = await send(api, smtp, "order-1", "jane@example.org")
    assert re.fullmatch(r"bounces\+[0-9a-f]+-[0-9a-f]+-[0-9a-f]+-[a-z2-7]{16}@mail\.example\.com", verp), verp


@pytest.mark.parametrize(
    ("fixture", "to", "type_", "data"),
    [
        ("postfix_dsn_5_1_1.eml", "jane@example.org", "bounced",
         {"bounceType": "hard", "smtpCode": 550, "status": "5.1.1", "report": "dsn"}),
        ("postfix_dsn_4_2_2_mailbox_full.eml", "full@example.org", "bounced",
         {"bounceType": "soft", "status": "4.2.2", "report": "dsn"}),
        ("postfix_delay.eml", "slow@example.org", "deferred", {"status": "4.4.1", "report": "dsn"}),
        ("exchange_dsn.eml", "jane.doe@example.org", "bounced", {"bounceType": "hard", "report": "dsn"}),
        ("exim_plain_text.eml", "jane@example.org", "bounced", {"bounceType": "hard", "report": "heuristic"}),
        ("qmail.eml", "nobody@example.org", "bounced", {"bounceType": "hard", "report": "heuristic"}),
        ("arf_abuse.eml", "pat@hotmail.example", "complained", {"feedbackType": "abuse", "report": "arf"}),
    ],
)  # fmt: skip
async def test_a_report_becomes_the_right_event_on_the_messages_timeline(
    api, smtp, listener_port, fixture, to, type_, data
):
    verp, message_id = await send(api, smtp, "order-2", to)
    code, answer = await deliver(listener_port, report(fixture, verp, message_id), verp)
    assert code == 250, answer
    events = await wait_until(lambda: timeline(api, "order-2", type_))
    event = next(e for e in events if e["type"] == type_)
    assert event["recipient"] == to
    assert {k: event["data"].get(k) for k in data} == data


async def test_a_complaint_sent_to_the_bare_feedback_address_finds_the_message_by_its_original_headers(
    api, smtp, listener_port
):
    verp, message_id = await send(api, smtp, "order-3", "pat@hotmail.example")
    code, _ = await deliver(listener_port, report("arf_abuse.eml", verp, message_id), "bounces@mail.example.com")
    assert code == 250
    assert await wait_until(lambda: timeline(api, "order-3", "complained"))


async def test_a_hard_bounce_reaches_a_subscribed_callback_signed_and_the_next_send_is_suppressed(
    api, smtp, listener_port, receiver
):
    await setup_callback(api, receiver, event_types=["bounced"])
    verp, message_id = await send(api, smtp, "order-4", "jane@example.org")
    assert (await deliver(listener_port, report("postfix_dsn_5_1_1.eml", verp, message_id), verp))[0] == 250
    [request] = await receiver.wait_for(1)
    assert request.json["type"] == "bounced" and request.json["data"]["messageKey"] == "order-4"
    assert request.headers["webhook-signature"].startswith("v1,")
    relayed = len(smtp[0].received)
    status, _ = await api.post("/v1/messages/order-5", {
        "recipient": {"to": "Jane@Example.org"}, "from": "shop@example.com", "subject": "Again", "text": "Hi"})  # fmt: skip
    assert status == 202
    events = await wait_until(lambda: timeline(api, "order-5", "failed"))
    assert events[-1]["data"]["statusCode"] == 1
    assert len(smtp[0].received) == relayed  # the suppressed address was not mailed again


async def test_a_redelivered_report_is_recorded_once(api, smtp, listener_port, database):
    verp, message_id = await send(api, smtp, "order-6", "jane@example.org")
    raw = report("postfix_dsn_5_1_1.eml", verp, message_id)
    assert (await deliver(listener_port, raw, verp))[0] == 250
    assert (await deliver(listener_port, raw, verp))[0] == 250
    await wait_until(lambda: timeline(api, "order-6", "bounced"))
    count = await database.pool.fetchval("SELECT count(*) FROM events WHERE type = 'bounced'")
    assert count == 1


async def test_mail_for_another_domain_is_refused_with_550_and_nothing_is_stored(api, listener_port, database):
    raw = (FIXTURES / "postfix_dsn_5_1_1.eml").read_bytes()
    code, answer = await deliver(listener_port, raw, "someone@elsewhere.example")
    assert code == 550, answer
    assert await database.pool.fetchval("SELECT count(*) FROM events") == 0
    assert await database.pool.fetchval("SELECT count(*) FROM unparsed_mail") == 0


@pytest.mark.parametrize("change", ["forged", "tampered", "expired"])
async def test_a_forged_tampered_or_expired_token_is_refused_and_nothing_is_stored(
    api, smtp, listener_port, database, change
):
    verp, message_id = await send(api, smtp, "order-7", "jane@example.org")
    local, _, domain = verp.partition("@")
    head, token = local.split("+", 1)
    account, message, day, mac = token.split("-")
    token = {
        "forged": f"{account}-{message}-{day}-{'a' * 16}",
        "tampered": f"{account}-{int(message, 16) + 1:x}-{day}-{mac}",
        "expired": f"{account}-{message}-{int(day, 16) - 31:x}-{mac}",
    }[change]
    bad = f"{head}+{token}@{domain}"
    code, answer = await deliver(listener_port, report("postfix_dsn_5_1_1.eml", bad, message_id), bad)
    assert code == 550, answer
    assert await database.pool.fetchval("SELECT count(*) FROM events WHERE type = 'bounced'") == 0


async def test_a_report_for_a_message_of_another_account_is_recorded_only_for_the_account_the_token_names(
    api, smtp, listener_port, database, aiohttp_client, settings
):
    other = Api(api.client, await make_key(database, "globex"))
    verp, message_id = await send(api, smtp, "order-8", "jane@example.org")
    _, other_message_id = await send(other, smtp, "order-8", "jane@example.org")
    # the report names globex's Message-ID, but it was sent to acme's token: the token decides
    raw = report("postfix_dsn_5_1_1.eml", verp, other_message_id)
    assert (await deliver(listener_port, raw, verp))[0] == 250
    assert await wait_until(lambda: timeline(api, "order-8", "bounced"))
    assert await timeline(other, "order-8", "bounced") is None


async def test_malformed_mail_is_kept_for_inspection_and_records_nothing(api, listener_port, database):
    garbage = b'Content-Type: multipart/report; boundary="x"\r\n\r\n--x\r\nnot a real part\r\n'
    code, _ = await deliver(listener_port, garbage, "bounces@mail.example.com")
    assert code == 250
    kept = await database.pool.fetch("SELECT reason, rcpt_tos FROM unparsed_mail")
    assert [r["rcpt_tos"] for r in kept] == [["bounces@mail.example.com"]]
    assert kept[0]["reason"].startswith("unreadable")
    assert await database.pool.fetchval("SELECT count(*) FROM events") == 0


async def test_a_mail_over_the_size_limit_is_refused_with_552(api, smtp, listener_port, database):
    verp, message_id = await send(api, smtp, "order-9", "jane@example.org")
    raw = report("postfix_dsn_5_1_1.eml", verp, message_id) + b"x" * 300_000
    code, answer = await deliver(listener_port, raw, verp)
    assert code == 552, answer
    assert await database.pool.fetchval("SELECT count(*) FROM events WHERE type = 'bounced'") == 0


async def test_sessions_beyond_the_limit_are_answered_421(api, listener_port):
    held = [aiosmtplib.SMTP(hostname="127.0.0.1", port=listener_port, timeout=10) for _ in range(3)]
    for client in held:
        await client.connect()
    try:
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
            await aiosmtplib.SMTP(hostname="127.0.0.1", port=listener_port, timeout=10).connect()
        assert refused.value.code == 421
    finally:
        for client in held:
            await client.quit()


async def test_the_kept_mail_is_listed_and_shown_by_the_cli(api, listener_port, database, settings, tmp_path):
    garbage = b"Subject: hello\r\n\r\nnot a report at all\r\n"
    assert (await deliver(listener_port, garbage, "bounces@mail.example.com"))[0] == 250
    env = service_env(tmp_path, settings.database_url)
    listed = await asyncio.to_thread(cli, env, "bounces", "unparsed")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "RECEIVED", "FROM", "TO", "BYTES", "WHY"]
    assert "bounces@mail.example.com" in row and "unreadable" in row
    mail_id = await database.pool.fetchval("SELECT id FROM unparsed_mail")
    shown = await asyncio.to_thread(cli, env, "bounces", "show", str(mail_id))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == garbage.decode().replace("\r\n", "\n")


async def test_refused_and_unreadable_mail_is_counted_in_metrics(api, smtp, listener_port):
    verp, message_id = await send(api, smtp, "order-10", "jane@example.org")
    assert (await deliver(listener_port, report("postfix_dsn_5_1_1.eml", verp, message_id), verp))[0] == 250
    assert (await deliver(listener_port, b"Subject: hi\r\n\r\nhello\r\n", "bounces@mail.example.com"))[0] == 250
    assert (await deliver(listener_port, b"Subject: hi\r\n\r\nhello\r\n", "x@elsewhere.example"))[0] == 550
    forged = verp.replace(verp.split("-")[-1].split("@")[0], "a" * 16)
    assert (await deliver(listener_port, b"Subject: hi\r\n\r\nhello\r\n", forged))[0] == 550
    resp = await api.client.get("/metrics", headers={"Authorization": "Bearer m-token"})
    text = await resp.text()
    for outcome in ("recorded", "unparsed", "refused_domain", "refused_token"):
        assert f'dispatcher_inbound_mail_total{{outcome="{outcome}"}} 1.0' in text, outcome
