"""Amazon SES events through Amazon SNS into a source: RSA keys and self-signed certificates made here, served
with the confirmation URL by a local HTTP server standing in for SNS; messages signed as SNS signs them
(SignatureVersion 1 and 2) carrying SES records shaped as SES's documentation shows them."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from dispatcher.settings import Settings
from tests.conftest import Api, setup_callback
from tests.integration.sources import event_count, source_post
from tests.receiver import stop_accepting

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
OTHER_TOPIC = "arn:aws:sns:us-east-1:123456789012:someone-else"
SES_ID = "010001912345abcd-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
_keys: dict[str, rsa.RSAPrivateKey] = {}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """SNS certificate and confirmation URLs on the local stand-in (the default trusts only SNS's hosts)."""
    return settings.model_copy(update={"sns_cert_url_pattern": r"^http://127\.0\.0\.1:\d+/"})


def key(name: str) -> rsa.RSAPrivateKey:
    if name not in _keys:
        _keys[name] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _keys[name]


def certificate(private: rsa.RSAPrivateKey, *, days: float = 1) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=2))
        .not_valid_after(now + timedelta(days=days))
        .sign(private, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class Sns:
    """The stand-in for SNS's hosts: certificates by name, and SubscribeURLs that record they were visited."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        self.port = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path}"

    async def start(self) -> Sns:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await self.site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        assert self.runner is not None and self.site is not None
        if isinstance(self.site._server, asyncio.Server):
            await stop_accepting(self.site._server)
        await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        self.hits[request.path_qs.removeprefix("/")] += 1
        if path.startswith("confirm"):
            return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")
        if path not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[path], content_type="application/x-x509-ca-cert")


@pytest.fixture
async def sns() -> Any:
    host = await Sns().start()
    host.files["cert.pem"] = certificate(key("sns"))
    host.files["other.pem"] = certificate(key("other"))
    host.files["expired.pem"] = certificate(key("sns"), days=-1)
    yield host
    await host.stop()


_serial = itertools.count()


def sns_time(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def string_to_sign(message: dict[str, Any]) -> bytes:
    """As SNS documents it: the signed fields in this order, "Name\\nvalue\\n" each; Subject only if present."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{n}\n{message[n]}\n" for n in names if n in message).encode()


def sign(message: dict[str, Any], private: rsa.RSAPrivateKey) -> dict[str, Any]:
    algorithm = hashes.SHA1() if message["SignatureVersion"] == "1" else hashes.SHA256()
    signature = private.sign(string_to_sign(message), padding.PKCS1v15(), algorithm)
    return {**message, "Signature": base64.b64encode(signature).decode()}


def notification(
    sns: Sns, record: dict[str, Any], *, version: str = "2", topic: str = TOPIC, message_id: str | None = None,
    timestamp: float | None = None, cert: str = "cert.pem", signer: str = "sns", subject: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    message = {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": orjson.dumps(record).decode(),
        "Timestamp": sns_time(timestamp),
        "SignatureVersion": version,
        "SigningCertURL": sns.url(cert),
        "UnsubscribeURL": sns.url("unsubscribe?SubscriptionArn=" + topic + ":sub"),
    }
    if subject is not None:
        message["Subject"] = subject
    return sign(message, key(signer))


def confirmation(
    sns: Sns, kind: str = "SubscriptionConfirmation", *, subscribe_url: str | None = None
) -> dict[str, Any]:
    token = f"token-{next(_serial)}"
    message = {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "Token": token,
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, "
        "visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url or sns.url(f"confirm?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={token}"),
        "Timestamp": sns_time(),
        "SignatureVersion": "2",
        "SigningCertURL": sns.url("cert.pem"),
    }
    return sign(message, key("sns"))


def headers(message: dict[str, Any]) -> dict[str, str]:
    return {
        "Content-Type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-message-id": message["MessageId"],
        "x-amz-sns-topic-arn": message["TopicArn"],
        "User-Agent": "Amazon Simple Notification Service Agent",
    }


async def deliver(api: Api, src: dict[str, Any], message: dict[str, Any]) -> tuple[int, Any]:
    return await source_post(api, src, orjson.dumps(message), headers(message))


def mail(key: str | None = "order-1", *, destination: tuple[str, ...] = ("ann@example.com",)) -> dict[str, Any]:
    tags: dict[str, list[str]] = {"ses:configuration-set": ["dispatcher"], "ses:from-domain": ["example.com"]}
    if key is not None:
        tags["messageKey"] = [key]
    return {
        "timestamp": sns_time(time.time() - 60),
        "source": "sender@example.com",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com",
        "sendingAccountId": "123456789012",
        "messageId": SES_ID,
        "destination": list(destination),
        "headersTruncated": False,
        "commonHeaders": {
            "from": ["sender@example.com"],
            "to": list(destination),
            "messageId": "<order-1.abc@mail.example.com>",
            "subject": "Your order",
        },
        "tags": tags,
    }


def at(seconds_ago: float) -> str:
    return sns_time(time.time() - seconds_ago)


def bounce(bounce_type: str = "Permanent", sub_type: str = "General", *, recipients: int = 1) -> dict[str, Any]:
    bounced = [
        {"emailAddress": address, "action": "failed", "status": "5.1.1",
         "diagnosticCode": "smtp; 550 5.1.1 user unknown"}
        for address in ["ann@example.com", "bob@example.com", "cy@example.com"][:recipients]
    ]  # fmt: skip
    return {"bounceType": bounce_type, "bounceSubType": sub_type, "bouncedRecipients": bounced, "timestamp": at(5),
            "feedbackId": "0100019-bounce-000000", "reportingMTA": "dsn; mta.example.com"}  # fmt: skip


def subscription(new: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"contactList": "Customers", "timestamp": at(5), "source": "UnsubscribeHeader",
            "newTopicPreferences": new,
            "oldTopicPreferences": old or {"unsubscribeAll": False, "topicSubscriptionStatus": []}}  # fmt: skip


def published(event_type: str, detail_key: str | None, detail: dict[str, Any], key: str = "order-1") -> dict[str, Any]:
    record: dict[str, Any] = {"eventType": event_type, "mail": mail(key)}
    if detail_key is not None:
        record[detail_key] = detail
    return record


def lifecycle(key: str = "order-1") -> list[dict[str, Any]]:
    """Send, Delivery, Open, Click, Bounce: event publishing records, in the order SES publishes them."""
    return [
        published("Send", "send", {}, key),
        published(
            "Delivery",
            "delivery",
            {
                "timestamp": at(50),
                "processingTimeMillis": 546,
                "recipients": ["ann@example.com"],
                "smtpResponse": "250 2.6.0 Message received",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
            },
            key,
        ),
        published("Open", "open", {"ipAddress": "192.0.2.1", "timestamp": at(40), "userAgent": "Mozilla/5.0"}, key),
        published(
            "Click",
            "click",
            {
                "ipAddress": "192.0.2.1",
                "timestamp": at(30),
                "userAgent": "Mozilla/5.0",
                "link": "https://example.com/pricing",
                "linkTags": {"campaign": ["spring"]},
            },
            key,
        ),
        published("Bounce", "bounce", bounce(), key),
    ]


@pytest.fixture
async def source(api: Api) -> dict[str, Any]:
    status, body = await api.post("/v1/sources", {"name": "ses", "provider": "ses", "config": {"topicArns": [TOPIC]}})
    assert status == 201, body
    return body


@pytest.mark.parametrize("version", ["1", "2"])
async def test_ses_events_signed_by_sns_land_in_the_timeline_under_the_messagekey_tag(api, source, sns, version):
    for record in lifecycle():
        status, answer = await deliver(api, source, notification(sns, record, version=version))
        assert status == 200 and answer == {"received": 1, "recorded": 1, "duplicates": 0, "ignored": 0}, answer
    status, msg = await api.get("/v1/messages/order-1")
    assert status == 200, msg
    assert [e["type"] for e in msg["events"]] == ["sent", "delivered", "opened", "clicked", "bounced"]
    delivered, opened, clicked, bounced = msg["events"][1:]
    assert delivered["data"]["response"] == "250 2.6.0 Message received"
    assert opened["data"]["userAgent"] == "Mozilla/5.0" and opened["data"]["ipAddress"] == "192.0.2.1"
    assert clicked["data"]["url"] == "https://example.com/pricing"
    assert bounced["recipient"] == "ann@example.com"
    assert {k: bounced["data"][k] for k in ("bounceType", "smtpCode", "reason", "status")} == {
        "bounceType": "hard", "smtpCode": 550, "reason": "smtp; 550 5.1.1 user unknown", "status": "5.1.1",
    }  # fmt: skip
    provider = bounced["data"]["provider"]
    assert provider["name"] == "ses" and provider["sourceId"] == source["sourceId"]
    assert provider["messageId"] == SES_ID and provider["rawType"] == "Bounce"
    assert provider["classification"] == "Permanent/General"
    assert provider["smtpMessageId"] == "order-1.abc@mail.example.com"
    assert provider["eventId"].endswith(":0")


async def test_a_signed_subject_is_part_of_what_sns_signs(api, source, sns):
    message = notification(sns, published("Send", "send", {}), subject="Amazon SES Email Event Notification")
    assert (await deliver(api, source, message))[0] == 200
    status, answer = await deliver(api, source, {**message, "Subject": "changed", "MessageId": str(uuid.uuid4())})
    assert status == 401, answer


async def test_the_signing_certificate_is_fetched_once_for_many_messages(api, source, sns):
    for record in lifecycle():
        assert (await deliver(api, source, notification(sns, record)))[0] == 200
    assert sns.hits["cert.pem"] == 1


@pytest.mark.parametrize(
    "case", ["tampered", "other_key", "stale", "future", "unsigned", "unknown_version", "expired_certificate",
             "missing_certificate", "not_json", "wrong_topic"],
)  # fmt: skip
async def test_an_unauthentic_sns_message_is_refused_and_nothing_is_stored(api, source, sns, database, case):
    record = published("Bounce", "bounce", bounce())
    message = notification(sns, record)
    body = None
    if case == "tampered":
        message = {**message, "Message": message["Message"].replace("Permanent", "Transient")}
    elif case == "other_key":  # signed by a key whose certificate is not the one at SigningCertURL
        message = notification(sns, record, signer="other")
    elif case == "stale":
        message = notification(sns, record, timestamp=time.time() - 3600)
    elif case == "future":
        message = notification(sns, record, timestamp=time.time() + 3600)
    elif case == "unsigned":
        message = {k: v for k, v in message.items() if k != "Signature"}
    elif case == "unknown_version":
        message = sign({**message, "SignatureVersion": "3"}, key("sns"))
    elif case == "expired_certificate":
        message = notification(sns, record, cert="expired.pem")
    elif case == "missing_certificate":
        message = notification(sns, record, cert="nowhere.pem")
    elif case == "not_json":
        body = b"Type=Notification&Message=hello"
    elif case == "wrong_topic":
        message = notification(sns, record, topic=OTHER_TOPIC)
    status, answer = await source_post(api, source, body or orjson.dumps(message), headers(message))
    assert status == 401 and answer["error"]["code"] == "unauthorized", answer
    assert await event_count(database) == 0


async def test_a_certificate_url_outside_the_trusted_pattern_is_never_fetched(api, source, sns, database):
    # localhost is this same server, but the pattern trusts only 127.0.0.1: nothing may be fetched.
    message = notification(sns, published("Send", "send", {}))
    message = sign({**message, "SigningCertURL": sns.url("cert.pem", host="localhost")}, key("sns"))
    status, answer = await deliver(api, source, message)
    assert status == 401, answer
    assert "DISPATCHER_SNS_CERT_URL_PATTERN" in answer["error"]["message"]
    assert sum(sns.hits.values()) == 0
    assert await event_count(database) == 0


async def test_a_message_from_a_topic_outside_the_allowlist_is_refused_before_any_fetch(api, source, sns):
    status, answer = await deliver(api, source, notification(sns, published("Send", "send", {}), topic=OTHER_TOPIC))
    assert status == 401 and "topic" in answer["error"]["message"], answer
    assert sum(sns.hits.values()) == 0


async def test_without_an_allowlist_any_topic_is_accepted_once_signed(api, sns):
    status, src = await api.post("/v1/sources", {"name": "ses-any", "provider": "ses", "config": {}})
    assert status == 201 and src["config"] == {} and src["secretsSet"] == [], src
    status, answer = await deliver(api, src, notification(sns, published("Send", "send", {}), topic=OTHER_TOPIC))
    assert status == 200 and answer["recorded"] == 1, answer


async def test_a_topic_allowlist_must_hold_sns_topic_arns(api):
    status, body = await api.post("/v1/sources", {"name": "ses", "provider": "ses",
                                                  "config": {"topicArns": ["https://example.com"]}})  # fmt: skip
    assert status == 400, body


async def test_a_subscription_confirmation_is_verified_then_confirmed_by_visiting_its_subscribeurl(api, source, sns):
    message = confirmation(sns)
    status, answer = await deliver(api, source, message)
    assert status == 200 and answer == {"received": 0, "recorded": 0, "duplicates": 0, "ignored": 0}, answer
    confirmed = [path for path in sns.hits if path.startswith("confirm")]
    assert len(confirmed) == 1 and f"Token={message['Token']}" in confirmed[0], sns.hits
    assert sns.hits[confirmed[0]] == 1


async def test_a_forged_subscription_confirmation_visits_nothing(api, source, sns, database):
    message = confirmation(sns)
    forged = {**message, "SubscribeURL": sns.url("confirm?Token=forged")}
    assert (await deliver(api, source, forged))[0] == 401
    untrusted = sign({**message, "SubscribeURL": sns.url("confirm?Token=x", host="localhost")}, key("sns"))
    status, answer = await deliver(api, source, untrusted)
    assert status == 401 and "DISPATCHER_SNS_CERT_URL_PATTERN" in answer["error"]["message"], answer
    assert [p for p in sns.hits if p.startswith("confirm")] == []


async def test_an_unsubscribe_confirmation_is_verified_and_records_nothing(api, source, sns, database):
    message = confirmation(sns, "UnsubscribeConfirmation")
    status, answer = await deliver(api, source, message)
    assert status == 200 and answer["received"] == 0, answer
    assert [p for p in sns.hits if p.startswith("confirm")] == []
    tampered = {**message, "Token": "other"}
    assert (await deliver(api, source, tampered))[0] == 401


async def test_a_retried_sns_message_is_recorded_once(api, source, sns, database):
    message = notification(sns, published("Bounce", "bounce", bounce(recipients=2)))
    status, answer = await deliver(api, source, message)
    assert status == 200 and answer["recorded"] == 2, answer
    status, answer = await deliver(api, source, message)
    assert status == 200 and answer["recorded"] == 0 and answer["duplicates"] == 2, answer
    assert await event_count(database) == 2


async def test_a_bounce_for_several_recipients_is_one_event_each(api, source, sns):
    message = notification(sns, published("Bounce", "bounce", bounce("Transient", "MailboxFull", recipients=3)))
    assert (await deliver(api, source, message))[1]["recorded"] == 3
    _, msg = await api.get("/v1/messages/order-1")
    assert sorted(e["recipient"] for e in msg["events"]) == ["ann@example.com", "bob@example.com", "cy@example.com"]
    assert sorted(e["data"]["provider"]["eventId"] for e in msg["events"]) == [
        f"{message['MessageId']}:{i}" for i in range(3)
    ]
    assert {e["data"]["bounceType"] for e in msg["events"]} == {"soft"}
    assert {e["data"]["provider"]["classification"] for e in msg["events"]} == {"Transient/MailboxFull"}


async def test_ses_notifications_without_tags_correlate_by_the_ses_message_id(api, source, sns):
    """Feedback notifications on an identity carry `notificationType` and no tags."""
    untagged = mail(None)
    records = [
        {"notificationType": "Delivery", "mail": untagged,
         "delivery": {"timestamp": at(20), "recipients": ["ann@example.com"], "smtpResponse": "250 ok",
                      "processingTimeMillis": 100, "reportingMTA": "a8-70.smtp-out.amazonses.com"}},
        {"notificationType": "Complaint", "mail": untagged,
         "complaint": {"complainedRecipients": [{"emailAddress": "ann@example.com"}], "timestamp": at(10),
                       "feedbackId": "0100019-complaint", "complaintFeedbackType": "abuse"}},
        {"notificationType": "Bounce", "mail": untagged, "bounce": bounce("Undetermined", "Undetermined")},
    ]  # fmt: skip
    for record in records:
        status, answer = await deliver(api, source, notification(sns, record))
        assert status == 200 and answer["recorded"] == 1, answer
    status, msg = await api.get(f"/v1/messages/{SES_ID}")
    assert status == 200, msg
    assert [e["type"] for e in msg["events"]] == ["delivered", "complained", "bounced"]
    assert msg["events"][1]["data"]["provider"]["classification"] == "abuse"
    assert msg["events"][2]["data"]["bounceType"] == "soft"
    assert msg["events"][2]["data"]["provider"]["rawType"] == "Bounce"


OPTED_OUT = {
    "unsubscribeAll": False,
    "topicSubscriptionStatus": [{"topicName": "News", "subscriptionStatus": "OptOut"}],
}
OPTED_IN = {"unsubscribeAll": False, "topicSubscriptionStatus": [{"topicName": "News", "subscriptionStatus": "OptIn"}]}
MAPPING = [
    # (eventType, detail key, detail, our type, data expected, classification)
    ("Send", "send", {}, "sent", {}, None),
    ("Delivery", "delivery", {"timestamp": at(1), "recipients": ["ann@example.com"], "smtpResponse": "250 ok"},
     "delivered", {"response": "250 ok", "smtpCode": 250}, None),
    ("DeliveryDelay", "deliveryDelay",
     {"timestamp": at(1), "delayType": "TransientCommunicationFailure", "expirationTime": at(-3600),
      "delayedRecipients": [{"emailAddress": "ann@example.com", "status": "4.4.1",
                             "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host"}]},
     "deferred", {"smtpCode": 421, "status": "4.4.1", "reason": "smtp; 421 4.4.1 Unable to connect to remote host"},
     "TransientCommunicationFailure"),
    ("Bounce", "bounce", bounce("Permanent", "NoEmail"), "bounced", {"bounceType": "hard"}, "Permanent/NoEmail"),
    ("Bounce", "bounce", bounce("Transient", "General"), "bounced", {"bounceType": "soft"}, "Transient/General"),
    ("Bounce", "bounce", bounce("Undetermined", "Undetermined"), "bounced", {"bounceType": "soft"},
     "Undetermined/Undetermined"),
    ("Complaint", "complaint", {"complainedRecipients": [{"emailAddress": "ann@example.com"}], "timestamp": at(1),
     "feedbackId": "f", "complaintFeedbackType": "abuse"}, "complained", {}, "abuse"),
    ("Reject", "reject", {"reason": "Bad content"}, "failed", {"reason": "rejected by SES: Bad content"}, None),
    ("Rendering Failure", "failure", {"errorMessage": "Attribute 'name' is not present in the rendering data.",
     "templateName": "Welcome"}, "failed",
     {"reason": "template rendering failure: Attribute 'name' is not present in the rendering data.",
      "templateName": "Welcome"}, None),
    ("Open", "open", {"ipAddress": "192.0.2.1", "timestamp": at(1), "userAgent": "Mail/1"}, "opened",
     {"ipAddress": "192.0.2.1", "userAgent": "Mail/1"}, None),
    ("Click", "click", {"ipAddress": "192.0.2.1", "timestamp": at(1), "userAgent": "Mail/1",
     "link": "https://example.com/a"}, "clicked", {"url": "https://example.com/a", "userAgent": "Mail/1"}, None),
    ("Subscription", "subscription", subscription({"unsubscribeAll": True, "topicSubscriptionStatus": []}),
     "unsubscribed", {"unsubscribeAll": True, "contactList": "Customers"}, "UnsubscribeHeader"),
    ("Subscription", "subscription", subscription(OPTED_OUT, OPTED_IN), "unsubscribed",
     {"unsubscribeAll": False, "topics": ["News"]}, "UnsubscribeHeader"),
    ("Subscription", "subscription", subscription(OPTED_IN, OPTED_OUT), None, {}, None),
    ("AmazonSnsSubscriptionSucceeded", None, {}, None, {}, None),
    ("SomethingNew", "somethingNew", {"timestamp": at(1)}, None, {}, None),
]  # fmt: skip


@pytest.mark.parametrize(("event_type", "detail_key", "detail", "expected", "data", "classification"), MAPPING)
async def test_each_ses_event_type_translates_as_the_mapping_table_says(
    api, source, sns, event_type, detail_key, detail, expected, data, classification
):
    record = published(event_type, detail_key, detail)
    if event_type == "AmazonSnsSubscriptionSucceeded":  # what SES sends when feedback notifications are set up
        record = {"notificationType": event_type, "message": "Successfully validated SNS topic for Amazon SES."}
    status, answer = await deliver(api, source, notification(sns, record))
    assert status == 200, answer
    if expected is None:
        assert answer == {"received": 1, "recorded": 0, "duplicates": 0, "ignored": 1}, answer
        assert (await api.get("/v1/messages/order-1"))[0] == 404
        return
    assert answer["recorded"] == 1, answer
    _, msg = await api.get("/v1/messages/order-1")
    [event] = msg["events"]
    assert event["type"] == expected and event["recipient"] == "ann@example.com"
    assert {k: event["data"].get(k) for k in data} == data
    assert event["data"]["provider"].get("classification") == classification
    assert event["data"]["provider"]["rawType"] == event_type


async def test_an_sns_message_that_is_not_an_ses_record_is_unreadable(api, source, sns, database):
    message = notification(sns, {"eventType": "Send"})
    message = sign({**message, "Message": "plain text published to the topic"}, key("sns"))
    status, answer = await deliver(api, source, message)
    assert status == 400, answer
    assert await event_count(database) == 0


async def test_an_ses_event_reaches_a_subscribed_callback(api, source, sns, receiver):
    await setup_callback(api, receiver, event_types=["bounced"])
    message = notification(sns, published("Bounce", "bounce", bounce(), key="order-9"), version="1")
    assert (await deliver(api, source, message))[0] == 200
    [request] = await receiver.wait_for(1)
    assert request.json["type"] == "bounced" and request.json["data"]["messageKey"] == "order-9"
    assert request.json["data"]["provider"]["name"] == "ses"
    assert request.json["data"]["bounceType"] == "hard"


async def test_the_ses_record_is_kept_for_audit_beside_the_event(api, source, sns):
    record = published("Click", "click", {"ipAddress": "192.0.2.1", "timestamp": at(1), "link": "https://e.com/"})
    assert (await deliver(api, source, notification(sns, record)))[0] == 200
    _, msg = await api.get("/v1/messages/order-1")
    status, receipt = await api.get(f"/v1/events/{msg['events'][0]['eventId']}/provider-event")
    assert status == 200 and receipt["raw"] == record, receipt
