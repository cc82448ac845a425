"""Standard Webhooks v1a (ed25519) signatures, verified with `cryptography`'s Ed25519 as a receiver would:
the public key from `whpk_…`, the signed content `{id}.{timestamp}.{body}`."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks.webhooks import Webhook

from dispatcher.crypto import PRIVATE_KEY_PREFIX, PUBLIC_KEY_PREFIX, new_signing_key, new_signing_secret, public_key
from dispatcher.delivery import formats, signing

SEED = bytes(range(32))
KEY = PRIVATE_KEY_PREFIX + base64.b64encode(SEED).decode()
MSG_ID, TS = "evt_12345", 1700000000
BODY = json.dumps({"type": "delivered", "messageKey": "order-1", "data": {"x": "ü"}}).encode()


def receiver_verifies(whpk: str, header_value: str, body: bytes, msg_id: str = MSG_ID, ts: int = TS) -> bool:
    """An independent receiver: every v1a signature is tried against the public key."""
    pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(whpk.removeprefix(PUBLIC_KEY_PREFIX)))
    for part in header_value.split(" "):
        version, _, sig = part.partition(",")
        if version != "v1a":
            continue
        try:
            pub.verify(base64.b64decode(sig), f"{msg_id}.{ts}.".encode() + body)
            return True
        except InvalidSignature:
            pass
    return False


def test_public_key_is_the_raw_ed25519_public_key_of_the_seed() -> None:
    raw = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public_key(KEY) == PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()
    assert public_key(new_signing_secret()) is None  # an HMAC secret has no public key


def test_generated_key_is_a_whsk_seed_of_32_bytes() -> None:
    key = new_signing_key()
    assert key.startswith("whsk_") and len(base64.b64decode(key.removeprefix("whsk_"))) == 32
    assert public_key(key) != public_key(new_signing_key())


def test_v1a_signature_verifies_with_the_public_key() -> None:
    header = signing.sign([KEY], MSG_ID, TS, BODY)
    assert header.startswith("v1a,") and " " not in header
    pk = public_key(KEY)
    assert pk is not None
    assert receiver_verifies(pk, header, BODY)


@pytest.mark.parametrize("tampered", [BODY + b" ", BODY.replace(b"delivered", b"bounced__"), b"{}"])
def test_v1a_tampered_body_fails(tampered: bytes) -> None:
    pk = public_key(KEY)
    assert pk is not None
    assert not receiver_verifies(pk, signing.sign([KEY], MSG_ID, TS, BODY), tampered)


def test_v1a_changed_id_or_timestamp_fails() -> None:
    pk = public_key(KEY)
    assert pk is not None
    header = signing.sign([KEY], MSG_ID, TS, BODY)
    assert not receiver_verifies(pk, header, BODY, msg_id="evt_99999")
    assert not receiver_verifies(pk, header, BODY, ts=TS + 1)


def test_rotation_signs_with_each_live_key_and_each_verifies_with_its_own_public_key() -> None:
    old, new = KEY, new_signing_key()
    header = signing.sign([new, old], MSG_ID, TS, BODY)
    parts = header.split(" ")
    assert len(parts) == 2 and all(p.startswith("v1a,") for p in parts)
    for key, part in zip([new, old], parts, strict=True):
        pk = public_key(key)
        assert pk is not None
        assert receiver_verifies(pk, part, BODY)
        other = public_key(old if key == new else new)
        assert other is not None
        assert not receiver_verifies(other, part, BODY)


def test_a_switch_of_scheme_signs_both_and_a_v1_receiver_still_verifies() -> None:
    """During the grace period after a v1 → v1a switch the header carries both; standardwebhooks skips v1a."""
    secret = new_signing_secret()
    headers = signing.headers([KEY, secret], MSG_ID, 1, BODY, "t")
    v1a, v1 = headers["webhook-signature"].split(" ")
    assert v1a.startswith("v1a,") and v1.startswith("v1,")
    pk = public_key(KEY)
    assert pk is not None
    assert receiver_verifies(pk, headers["webhook-signature"], BODY, ts=1)
    wh = Webhook(secret)
    with pytest.raises(Exception, match="timestamp"):  # the signature is fine; only the old timestamp is refused
        wh.verify(BODY, headers)
    assert wh.verify(BODY, signing.headers([KEY, secret], MSG_ID, int(time.time()), BODY, "t"))


def test_the_standard_format_signs_v1a_keys_through_the_one_signer() -> None:
    rows = [{"id": 1, "event_id": 7, "type": "delivered", "message_key": "m", "recipient": "a@example.com",
             "definition_key": None, "account_id": 1, "data": "{}", "occurred_at": datetime.now(UTC)}]  # fmt: skip
    msg_id, body, headers = formats.request("standard", rows, False, [KEY], TS, "t")
    pk = public_key(KEY)
    assert pk is not None
    assert receiver_verifies(pk, headers["webhook-signature"], body, msg_id=msg_id)
