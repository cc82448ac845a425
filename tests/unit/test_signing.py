"""Standard Webhooks signatures, checked against the public `standardwebhooks` verifier and a known answer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from dispatcher.crypto import SECRET_PREFIX, new_signing_secret
from dispatcher.delivery import signing

SECRET_A = "whsec_" + base64.b64encode(b"A" * 32).decode()
SECRET_B = "whsec_" + base64.b64encode(bytes(range(32))).decode()
SECRET_OTHER = "whsec_" + base64.b64encode(b"not the right key, not at all!!!").decode()
MSG_ID = "evt_12345"
BODY = json.dumps({"type": "delivered", "messageKey": "order-1", "data": {"x": "ü"}}).encode()


def whsec(key: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(key).decode()


def now() -> int:
    return int(time.time())


def verify(secret: str, body: bytes, headers: dict[str, str]) -> object:
    return Webhook(secret).verify(body, headers)


def make_headers(secrets: list[str], body: bytes = BODY, msg_id: str = MSG_ID, ts: int | None = None) -> dict:
    return signing.headers(secrets, msg_id, now() if ts is None else ts, body, "dispatcher-test/1.0")


# --- known answers -------------------------------------------------------------------------------


def test_signature_matches_an_independently_computed_hmac_of_id_timestamp_body() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    msg_id, ts, body = "msg_2Lq4KqYVx", 1700000000, b'{"hello":"world"}'
    to_sign = f"{msg_id}.{ts}.{body.decode()}".encode()
    expected = "v1," + base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()
    assert signing.sign([whsec(key)], msg_id, ts, body) == expected


def test_signature_matches_the_published_standard_webhooks_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    got = signing.sign([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_covers_non_ascii_body_bytes_exactly() -> None:
    key = b"k" * 32
    body = '{"name":"Zoë ✓"}'.encode()
    expected = base64.b64encode(hmac.new(key, b"id.1." + body, hashlib.sha256).digest()).decode()
    assert signing.sign([whsec(key)], "id", 1, body) == "v1," + expected


def test_secret_bytes_strips_the_prefix_and_decodes_base64() -> None:
    assert signing.secret_bytes(SECRET_A) == b"A" * 32
    assert signing.secret_bytes(SECRET_A.removeprefix(SECRET_PREFIX)) == b"A" * 32


def test_generated_secret_has_the_whsec_prefix_and_32_key_bytes() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    assert len(signing.secret_bytes(secret)) == 32


# --- headers, verified by the standardwebhooks package -------------------------------------------


def test_headers_carry_id_timestamp_signature_and_content_type() -> None:
    h = make_headers([SECRET_A], ts=1700000000)
    assert h["webhook-id"] == MSG_ID
    assert h["webhook-timestamp"] == "1700000000"
    assert h["webhook-signature"].startswith("v1,")
    assert h["content-type"] == "application/json"
    assert h["user-agent"] == "dispatcher-test/1.0"


@pytest.mark.parametrize("secret", [SECRET_A, SECRET_B, "generated"])
def test_standardwebhooks_verifies_a_signed_delivery(secret: str) -> None:
    if secret == "generated":
        secret = new_signing_secret()
    assert verify(secret, BODY, make_headers([secret])) == json.loads(BODY)


def test_rotation_header_has_one_v1_signature_per_live_secret() -> None:
    sig = make_headers([SECRET_A, SECRET_B])["webhook-signature"]
    parts = sig.split(" ")
    assert len(parts) == 2
    assert all(p.startswith("v1,") for p in parts)
    assert parts[0] != parts[1]


def test_during_rotation_each_secret_verifies_the_delivery() -> None:
    headers = make_headers([SECRET_A, SECRET_B])
    assert verify(SECRET_A, BODY, headers) == json.loads(BODY)
    assert verify(SECRET_B, BODY, headers) == json.loads(BODY)


def test_during_rotation_each_signature_belongs_to_its_own_secret() -> None:
    headers = make_headers([SECRET_A, SECRET_B])
    sig_a, sig_b = headers["webhook-signature"].split(" ")
    only_a = {**headers, "webhook-signature": sig_a}
    only_b = {**headers, "webhook-signature": sig_b}
    verify(SECRET_A, BODY, only_a)
    verify(SECRET_B, BODY, only_b)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET_B, BODY, only_a)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET_A, BODY, only_b)


def test_rotation_signatures_match_single_secret_signatures() -> None:
    ts = now()
    both = make_headers([SECRET_A, SECRET_B], ts=ts)["webhook-signature"]
    a = make_headers([SECRET_A], ts=ts)["webhook-signature"]
    b = make_headers([SECRET_B], ts=ts)["webhook-signature"]
    assert both == f"{a} {b}"


def test_unrelated_secret_fails_verification() -> None:
    with pytest.raises(WebhookVerificationError):
        verify(SECRET_OTHER, BODY, make_headers([SECRET_A, SECRET_B]))


@pytest.mark.parametrize(
    "tampered",
    [
        BODY.replace(b"delivered", b"bounced__"),
        BODY + b" ",
        BODY[:-1],
        b"{}",
    ],
)
def test_tampered_body_fails_verification(tampered: bytes) -> None:
    headers = make_headers([SECRET_A])
    with pytest.raises(WebhookVerificationError):
        verify(SECRET_A, tampered, headers)


def test_changed_message_id_fails_verification() -> None:
    headers = {**make_headers([SECRET_A]), "webhook-id": "evt_99999"}
    with pytest.raises(WebhookVerificationError):
        verify(SECRET_A, BODY, headers)


def test_changed_timestamp_fails_verification() -> None:
    headers = make_headers([SECRET_A])
    headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET_A, BODY, headers)
