"""Amazon SES events through an Amazon SNS topic's HTTPS subscription. SNS signs each message with RSA
(SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) over a canonical string of the message's fields; the
signing certificate is fetched from the message's SigningCertURL, which must match
DISPATCHER_SNS_CERT_URL_PATTERN (the core's fetcher refuses any other URL and caches certificates).
A SubscriptionConfirmation is answered by fetching its SubscribeURL, under the same rule.

The SNS `Message` is the SES record: event publishing (`eventType`, through a configuration set) or
feedback notifications (`notificationType`, set on an identity)."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import Field

from dispatcher.inbound.adapter import (
    Fetch,
    ProviderEvent,
    Received,
    Refused,
    Request,
    SourceConfig,
    Unreadable,
    check_timestamp,
    iso_time,
    smtp_code,
)

TOPIC_ARN = r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,256}$"

# The fields each message type signs, in the order SNS signs them ("Name\nvalue\n" each).
SIGNED: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
OPTIONAL = frozenset({"Subject"})  # signed only when present
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class SesConfig(SourceConfig):
    topicArns: Annotated[list[Annotated[str, Field(pattern=TOPIC_ARN)]], Field(min_length=1, max_length=100)] | None = (
        Field(
            None,
            description="SNS topic ARNs this source accepts (arn:aws:sns:<region>:<account>:<topic>); a message "
            "from any other topic is refused. Unset: any topic whose message SNS signed",
        )
    )


# SES event or notification type → our type. Bounce, Subscription: decided in `translate`.
TYPES: dict[str, str | None] = {
    "Send": "sent",
    "Delivery": "delivered",
    "DeliveryDelay": "deferred",
    "Bounce": "bounced",
    "Complaint": "complained",
    "Reject": "failed",
    "Rendering Failure": "failed",
    "Open": "opened",
    "Click": "clicked",
    "Subscription": "unsubscribed",
    "AmazonSnsSubscriptionSucceeded": None,  # SES's test message when an identity's notifications are set up
}
HARD = {"Permanent": "hard", "Transient": "soft", "Undetermined": "soft"}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _objects(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def canonical(message: dict[str, Any]) -> bytes:
    """The string SNS signs: each signed field present, "Name\\nvalue\\n", in SNS's order."""
    out = []
    for name in SIGNED[message["Type"]]:
        value = message.get(name)
        if value is None and name in OPTIONAL:
            continue
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode()


def _envelope(request: Request) -> dict[str, Any]:
    try:
        message = request.json()
    except Unreadable:
        raise Refused("missing_auth", "the body is not a signed SNS message") from None
    if not isinstance(message, dict) or message.get("Type") not in SIGNED:
        raise Refused("missing_auth", "the body is not a signed SNS message")
    required = [n for n in (*SIGNED[message["Type"]], "Signature", "SigningCertURL", "SignatureVersion")
                if n not in OPTIONAL]  # fmt: skip
    missing = [n for n in required if not isinstance(message.get(n), str)]
    if "Subject" in message and message["Subject"] is not None and not isinstance(message["Subject"], str):
        missing.append("Subject")
    if missing:
        raise Refused("missing_auth", f"the SNS message lacks {', '.join(missing)}")
    return message


async def verify(request: Request, message: dict[str, Any], fetch: Fetch) -> None:
    """The SNS signature, with the certificate at SigningCertURL (fetched only if the URL is trusted)."""
    algorithm = HASHES.get(message["SignatureVersion"])
    if algorithm is None:
        raise Refused("invalid_signature", "SignatureVersion must be 1 or 2")
    pem = await fetch(message["SigningCertURL"], cache=True)
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Refused("invalid_signature", "the SigningCertURL does not hold a PEM certificate") from None
    now = datetime.fromtimestamp(request.received_at, UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise Refused("invalid_signature", "the signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused("invalid_signature", "the signing certificate's key is not RSA")
    try:
        signature = base64.b64decode(message["Signature"], validate=True)
        key.verify(signature, canonical(message), padding.PKCS1v15(), algorithm())
    except (InvalidSignature, ValueError, binascii.Error):
        raise Refused("invalid_signature", "the SNS signature does not match the message") from None


def _recipients(kind: str, ses: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-recipient entries of a type that lists them (one event each); [] for message-level types."""
    if kind == "Bounce":
        return _objects(_object(ses.get("bounce")).get("bouncedRecipients"))
    if kind == "Complaint":
        return _objects(_object(ses.get("complaint")).get("complainedRecipients"))
    if kind == "DeliveryDelay":
        return _objects(_object(ses.get("deliveryDelay")).get("delayedRecipients"))
    if kind == "Delivery":
        found = _object(ses.get("delivery")).get("recipients")
        return [{"emailAddress": r} for r in found if isinstance(r, str)] if isinstance(found, list) else []
    return []


def _unsubscribed(subscription: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether a Subscription event opts the contact out: of every topic, or of a topic it was not opted
    out of before. Opting in (or a change that opts out of nothing) is not an unsubscribe."""
    new, old = _object(subscription.get("newTopicPreferences")), _object(subscription.get("oldTopicPreferences"))
    before = {t.get("topicName"): t.get("subscriptionStatus") for t in _objects(old.get("topicSubscriptionStatus"))}
    topics = [
        str(t.get("topicName"))
        for t in _objects(new.get("topicSubscriptionStatus"))
        if t.get("subscriptionStatus") == "OptOut" and before.get(t.get("topicName")) != "OptOut"
    ]
    return new.get("unsubscribeAll") is True or bool(topics), topics


def _first(values: Any) -> str | None:
    return _text(values[0]) if isinstance(values, list) and values else None


def message_key(tags: dict[str, Any]) -> str | None:
    """The tag `messageKey`, or `messageKeyB64` (UTF-8 in unpadded base64url) for a key SES cannot hold
    in a tag value."""
    plain, encoded = _first(tags.get("messageKey")), _first(tags.get("messageKeyB64"))
    if plain or not encoded:
        return plain
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def translate(sns: dict[str, Any], ses: Any) -> list[ProviderEvent]:
    """One SES record → one event, or one per recipient for the types that list recipients."""
    if not isinstance(ses, dict):
        raise Unreadable("the SNS Message must be an SES event record (a JSON object)")
    kind = _text(ses.get("eventType")) or _text(ses.get("notificationType"))
    if kind is None:
        raise Unreadable("the SES record has neither eventType nor notificationType")
    type_ = TYPES.get(kind)
    mail = _object(ses.get("mail"))
    tags = _object(mail.get("tags"))
    found = mail.get("destination")
    destination = [d for d in found if isinstance(d, str)] if isinstance(found, list) else []
    detail_key = {"Rendering Failure": "failure", "DeliveryDelay": "deliveryDelay"}.get(
        kind, kind[:1].lower() + kind[1:]
    )
    detail = _object(ses.get(detail_key))
    occurred_at = iso_time(detail.get("timestamp")) or iso_time(mail.get("timestamp")) or iso_time(sns["Timestamp"])
    common = {
        "raw_type": kind,
        "raw": ses,
        "message_id": _text(mail.get("messageId")),
        "smtp_message_id": _text(_object(mail.get("commonHeaders")).get("messageId")),
        "message_key": message_key(tags),
        "occurred_at": occurred_at,
    }
    entries = _recipients(kind, ses)
    if not entries:
        return [
            _event(
                type_, kind, detail, None, common, sns["MessageId"], destination[0] if len(destination) == 1 else None
            )
        ]
    return [
        _event(type_, kind, detail, entry, common, f"{sns['MessageId']}:{i}", _text(entry.get("emailAddress")))
        for i, entry in enumerate(entries)
    ]


def _event(
    type_: str | None, kind: str, detail: dict[str, Any], entry: dict[str, Any] | None, common: dict[str, Any],
    event_id: str, recipient: str | None,
) -> ProviderEvent:  # fmt: skip
    entry = entry or {}
    data: dict[str, Any] = {}
    classification = None
    if kind == "Bounce":
        bounce_type, sub_type = _text(detail.get("bounceType")), _text(detail.get("bounceSubType"))
        diagnostic = _text(entry.get("diagnosticCode"))
        data = {"bounceType": HARD.get(bounce_type or "", "soft"), "smtpCode": smtp_code(diagnostic),
                "reason": diagnostic, "status": _text(entry.get("status"))}  # fmt: skip
        classification = "/".join(p for p in (bounce_type, sub_type) if p) or None
    elif kind == "Complaint":
        classification = _text(detail.get("complaintFeedbackType")) or _text(detail.get("complaintSubType"))
    elif kind == "Delivery":
        response = _text(detail.get("smtpResponse"))
        data = {"response": response, "smtpCode": smtp_code(response)}
    elif kind == "DeliveryDelay":
        diagnostic = _text(entry.get("diagnosticCode"))
        data = {"reason": diagnostic, "smtpCode": smtp_code(diagnostic), "status": _text(entry.get("status")),
                "expirationTime": _text(detail.get("expirationTime"))}  # fmt: skip
        classification = _text(detail.get("delayType"))
    elif kind == "Reject":
        data = {"reason": f"rejected by SES: {_text(detail.get('reason')) or 'no reason given'}"}
    elif kind == "Rendering Failure":
        data = {"reason": f"template rendering failure: {_text(detail.get('errorMessage')) or 'no message given'}",
                "templateName": _text(detail.get("templateName"))}  # fmt: skip
    elif kind in ("Open", "Click"):
        data = {"userAgent": _text(detail.get("userAgent")), "ipAddress": _text(detail.get("ipAddress"))}
        if kind == "Click":
            data["url"] = _text(detail.get("link")) or "about:blank"
    elif kind == "Subscription":
        out, topics = _unsubscribed(detail)
        if not out:
            type_ = None
        all_topics = _object(detail.get("newTopicPreferences")).get("unsubscribeAll") is True
        data = {"contactList": _text(detail.get("contactList")), "unsubscribeAll": all_topics, "topics": topics}
        classification = _text(detail.get("source"))  # how: e.g. UnsubscribeHeader
    return ProviderEvent(
        type=type_, event_id=event_id, recipient=recipient, data=data, classification=classification, **common
    )


class Ses:
    provider: ClassVar[str] = "ses"
    config_model: ClassVar[type[SourceConfig]] = SesConfig
    secrets: ClassVar[tuple[str, ...]] = ()  # SNS signs with its certificate: nothing shared

    async def receive(self, request: Request, fetch: Fetch) -> Received:
        message = _envelope(request)
        allowed = request.config.get("topicArns")
        if allowed is not None and message["TopicArn"] not in allowed:
            raise Refused("wrong_topic", "the SNS message comes from a topic this source does not accept")
        sent_at = iso_time(message["Timestamp"])
        check_timestamp(request, sent_at.timestamp() if sent_at else None)
        await verify(request, message, fetch)
        if message["Type"] == "SubscriptionConfirmation":
            await fetch(message["SubscribeURL"])
            return Received(events=[])
        if message["Type"] == "UnsubscribeConfirmation":
            return Received(events=[])
        try:
            ses = orjson.loads(message["Message"])
        except orjson.JSONDecodeError:
            raise Unreadable("the SNS Message is not JSON: not an SES event record") from None
        return Received(events=translate(message, ses))
