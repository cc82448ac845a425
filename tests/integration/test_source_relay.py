"""Mail dispatcher sends through a provider's SMTP relay carries the messageKey in the header that
provider echoes (DISPATCHER_MAIL_PROVIDER), and remembers the Message-ID it went out with: the
provider's events, built from what the relay (aiosmtpd) received, come back to the same message."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, NamedTuple

import orjson
import pytest

from dispatcher.runtime import create_app
from tests.conftest import Api, make_key, wait_until
from tests.integration import test_source_brevo as brevo
from tests.integration import test_source_postmark as postmark
from tests.integration import test_source_ses as ses
from tests.integration import test_source_sparkpost as sparkpost
from tests.integration.sources import source_post
from tests.integration.test_smtp_transport import free_port
from tests.integration.test_source_sendgrid import keypair, signed

# test_source_mailgun and test_source_resend import this module's helpers, so their own helpers are
# imported where they are used (a top-level import here would be circular).


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


# Every header dispatcher may set for a provider (dispatcher/sending/providers.py): a relayed mail
# must carry its provider's and no other's.
PROVIDER_HEADERS = ("X-SES-MESSAGE-TAGS", "X-SMTPAPI", "X-Mailgun-Variables", "X-PM-Metadata-messageKey",
                    "X-MSYS-API", "X-Mailin-custom")  # fmt: skip
SNS_STAND_IN = r"^http://127\.0\.0\.1:\d+/"  # as test_source_ses trusts its local SNS stand-in


def ses_tags(header: str) -> dict[str, list[str]]:
    """X-SES-MESSAGE-TAGS as SES reads it, `name=value` pairs separated by commas, each becoming a
    mail.tags entry whose value is a list."""
    pairs = (pair.split("=", 1) for pair in header.split(","))
    return {name.strip(): [value.strip()] for name, value in pairs}


def postmark_metadata(mail: EmailMessage) -> dict[str, str]:
    """Each X-PM-Metadata-<name> header becomes Metadata.<name>."""
    prefix = "x-pm-metadata-"
    return {name[len(prefix) :]: str(value) for name, value in mail.items() if name.lower().startswith(prefix)}


def ses_echo(mail: EmailMessage, secret: str, sns: ses.Sns) -> tuple[bytes, dict[str, str]]:
    """A Delivery record whose mail.tags hold the relayed tags (and whose commonHeaders name another
    Message-ID: SES replaces the one it is given), published through SNS and signed as SNS signs."""
    common = ses.mail(None)
    record = {
        "eventType": "Delivery",
        "mail": {**common, "tags": {**common["tags"], **ses_tags(mail["X-SES-MESSAGE-TAGS"])}},
        "delivery": {"timestamp": ses.at(1), "recipients": ["ann@example.com"], "smtpResponse": "250 ok"},
    }
    message = ses.notification(sns, record)
    return orjson.dumps(message), ses.headers(message)


def mailgun_echo(mail: EmailMessage, secret: str, sns: Any) -> tuple[bytes, dict[str, str]]:
    """X-Mailgun-Variables' JSON becomes event-data.user-variables; signed with the signing key."""
    from tests.integration import test_source_mailgun as mailgun

    raw = mailgun.event("delivered", key=None, **{"user-variables": json.loads(mail["X-Mailgun-Variables"])})
    return mailgun.webhook(raw, secret), {"Content-Type": "application/json"}


def postmark_echo(mail: EmailMessage, secret: str, sns: Any) -> tuple[bytes, dict[str, str]]:
    delivery = {**postmark.postmark_records()[0], "Metadata": postmark_metadata(mail)}
    return orjson.dumps(delivery), postmark.basic(postmark.USERNAME, secret)


def sparkpost_echo(mail: EmailMessage, secret: str, sns: Any) -> tuple[bytes, dict[str, str]]:
    """X-MSYS-API's metadata becomes each event's rcpt_meta."""
    item = sparkpost.event("message_event", "delivery", 1)
    item["msys"]["message_event"]["rcpt_meta"] = json.loads(mail["X-MSYS-API"])["metadata"]
    return orjson.dumps([item]), sparkpost.basic(sparkpost.USERNAME, secret)


def brevo_echo(mail: EmailMessage, secret: str, sns: Any) -> tuple[bytes, dict[str, str]]:
    """X-Mailin-custom's value comes back as the event's X-Mailin-custom field."""
    delivered = brevo.brevo_event("delivered", 1, key=mail["X-Mailin-custom"])
    return orjson.dumps(delivered), brevo.basic(brevo.USERNAME, secret)


def resend_echo(mail: EmailMessage, secret: str, sns: Any) -> tuple[bytes, dict[str, str]]:
    """No tag: data.message_id is the relayed Message-ID, which dispatcher recorded when it sent."""
    from tests.integration import test_source_resend as resend

    raw = resend.resend_event("email.delivered", key=None)
    raw["data"]["message_id"] = mail["Message-ID"]
    body = orjson.dumps(raw)
    return body, resend.signed(secret, body)


def resend_secret() -> str:
    from tests.integration import test_source_resend as resend

    return resend.new_secret()


class Echo(NamedTuple):
    header: str | None  # the header dispatcher sets for the provider; None for Resend, which echoes none
    relayed: Callable[[str], Any]  # that header's value, read as the provider reads it
    expected: Any  # what the provider must read there for RELAYED_KEY
    secret: Callable[[], str]
    config: Callable[[str], dict[str, Any]]  # the source's config holding the secret
    webhook: Callable[[EmailMessage, str, Any], tuple[bytes, dict[str, str]]]  # (mail, secret, sns) -> request


RELAYED_KEY = "order-90"


def _password() -> str:
    return secrets.token_urlsafe(24)


def _same(value: str) -> str:
    return value


ECHOES = {
    "ses": Echo("X-SES-MESSAGE-TAGS", ses_tags, {"messageKey": [RELAYED_KEY]}, lambda: "",  # SNS signs, with no secret
                lambda _: {"topicArns": [ses.TOPIC]}, ses_echo),
    "mailgun": Echo("X-Mailgun-Variables", json.loads, {"messageKey": RELAYED_KEY}, lambda: secrets.token_hex(16),
                    lambda key: {"signingKey": key}, mailgun_echo),
    "postmark": Echo("X-PM-Metadata-messageKey", _same, RELAYED_KEY, _password,
                     lambda pw: {"username": postmark.USERNAME, "password": pw}, postmark_echo),
    "sparkpost": Echo("X-MSYS-API", json.loads, {"metadata": {"messageKey": RELAYED_KEY}}, _password,
                      lambda pw: {"username": sparkpost.USERNAME, "password": pw}, sparkpost_echo),
    "brevo": Echo("X-Mailin-custom", _same, RELAYED_KEY, _password,
                  lambda pw: {"username": brevo.USERNAME, "password": pw}, brevo_echo),
    "resend": Echo(None, _same, None, resend_secret, lambda secret: {"signingSecret": secret}, resend_echo),
}  # fmt: skip


@pytest.fixture
async def sns(provider: str) -> Any:
    """SES's events come through SNS: for SES, the local stand-in serving the certificate they are signed under."""
    if provider != "ses":
        yield None
        return
    host = await ses.Sns().start()
    host.files["cert.pem"] = ses.certificate(ses.key("sns"))
    yield host
    await host.stop()


@pytest.mark.parametrize("provider", list(ECHOES))
async def test_mail_through_each_providers_relay_carries_the_messagekey_and_the_providers_event_comes_back(
    database, settings, aiohttp_client, smtp, sns, provider
):
    echo = ECHOES[provider]
    if provider == "ses":
        settings = settings.model_copy(update={"sns_cert_url_pattern": SNS_STAND_IN})
    api = await relay_api(database, settings, aiohttp_client, smtp, provider)
    secret = echo.secret()
    status, src = await api.post("/v1/sources", {"name": provider, "provider": provider,
                                                 "config": echo.config(secret)})  # fmt: skip
    assert status == 201, src
    mail = await send_and_relay(api, smtp, RELAYED_KEY)
    # What the relay received: the provider's header (none for Resend) and no other provider's, holding the key.
    assert [h for h in PROVIDER_HEADERS if h in mail] == ([echo.header] if echo.header else [])
    if echo.header:
        assert echo.relayed(mail[echo.header]) == echo.expected
    assert mail["Message-ID"]
    await wait_until(lambda: types_of(api, RELAYED_KEY, "sent"))

    body, headers = echo.webhook(mail, secret, sns)
    status, answer = await source_post(api, src, body, headers)
    assert status == 200 and answer["recorded"] == 1, answer
    assert await wait_until(lambda: types_of(api, RELAYED_KEY, "sent", "delivered"))
    _, msg = await api.get(f"/v1/messages/{RELAYED_KEY}")
    [delivered] = [e for e in msg["events"] if e["type"] == "delivered"]
    assert delivered["data"]["provider"]["name"] == provider
    assert delivered["data"]["provider"]["sourceId"] == src["sourceId"]
