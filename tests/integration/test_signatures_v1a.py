"""Asymmetric signatures (Standard Webhooks v1a, ed25519): a callback with `signature: "v1a"` publishes its
public key (`whpk_…`), and what a real receiver gets verifies with `cryptography`'s Ed25519 alone: an
independent implementation of the spec's signed content `{id}.{timestamp}.{body}`. The private key is
stored encrypted like an HMAC secret and is never shown."""

from __future__ import annotations

import base64
import html
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dispatcher.crypto import load_keyring
from tests.conftest import Api, wait_until
from tests.console import Console
from tests.receiver import Received, Receiver


def v1a_signatures(req: Received) -> list[bytes]:
    return [base64.b64decode(p.split(",", 1)[1]) for p in req.headers["webhook-signature"].split(" ")
            if p.startswith("v1a,")]  # fmt: skip


def verifies(public_key: str, req: Received, body: bytes | None = None) -> bool:
    """As a receiver holding only the public key: does any v1a signature of the request verify?"""
    assert public_key.startswith("whpk_")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    signed = f"{req.headers['webhook-id']}.{req.headers['webhook-timestamp']}.".encode() + (body or req.body)
    for signature in v1a_signatures(req):
        try:
            key.verify(signature, signed)
            return True
        except InvalidSignature:
            pass
    return False


async def post_event(api: Api, message_key: str) -> None:
    status, body = await api.post("/v1/events", {"type": "sent", "messageKey": message_key})
    assert status == 201, body


async def setup_v1a(api: Api, receiver: Receiver, **fields: Any) -> dict[str, Any]:
    """Register a v1a callback, check its signed handshake, verify it and subscribe it to everything."""
    status, cb = await api.post("/v1/callbacks", {"name": "hook", "url": receiver.url, "signature": "v1a", **fields})
    assert status == 201, cb
    [handshake] = await receiver.wait_for(1, events_only=False)
    assert verifies(cb["publicKey"], handshake)  # the handshake is signed as the webhooks are
    key = handshake.json["verificationKey"]
    status, body = await api.post(f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": key})
    assert status == 200 and body["status"] == "active", body
    sub = {"name": "all", "callbackId": cb["callbackId"], "eventTypes": ["*"]}
    assert (await api.post("/v1/subscriptions", sub))[0] == 201
    return cb


async def test_a_v1a_callback_publishes_its_public_key_and_shows_no_secret(api: Api, receiver: Receiver):
    cb = await setup_v1a(api, receiver)
    assert cb["signature"] == "v1a" and cb["publicKey"].startswith("whpk_")
    assert len(base64.b64decode(cb["publicKey"].removeprefix("whpk_"))) == 32
    assert "signingSecret" not in cb and cb["previousPublicKey"] is None
    _, again = await api.get(f"/v1/callbacks/{cb['callbackId']}")
    assert again["publicKey"] == cb["publicKey"] and "signingSecret" not in again
    _, listed = await api.get("/v1/callbacks")
    assert [c["publicKey"] for c in listed["callbacks"]] == [cb["publicKey"]]


async def test_a_v1_callback_has_no_public_key(api: Api, receiver: Receiver):
    status, cb = await api.post("/v1/callbacks", {"name": "plain", "url": receiver.url})
    assert status == 201
    assert (cb["signature"], cb["publicKey"], cb["previousPublicKey"]) == ("v1", None, None)
    assert cb["signingSecret"].startswith("whsec_")


async def test_a_delivery_verifies_with_the_public_key_and_a_tampered_body_does_not(api: Api, receiver: Receiver):
    cb = await setup_v1a(api, receiver)
    await post_event(api, "m-1")
    [req] = await receiver.wait_for(1)
    assert req.headers["webhook-signature"].startswith("v1a,") and " " not in req.headers["webhook-signature"]
    assert verifies(cb["publicKey"], req)
    assert not verifies(cb["publicKey"], req, req.body.replace(b"m-1", b"m-2"))
    assert not verifies(cb["publicKey"], req, req.body + b" ")


async def test_a_batched_v1a_delivery_verifies(api: Api, receiver: Receiver):
    cb = await setup_v1a(api, receiver, maxBatchSize=10)
    await api.post("/v1/events", {"events": [{"type": "sent", "messageKey": f"b{i}"} for i in range(3)]})
    await wait_until(lambda: _arrived(receiver, 3))
    assert all(verifies(cb["publicKey"], req) for req in receiver.events)


async def _arrived(receiver: Receiver, n: int) -> bool:
    return sum(len(r.json) if isinstance(r.json, list) else 1 for r in receiver.events) >= n


async def test_rotation_signs_twice_during_grace_and_once_after(api: Api, receiver: Receiver, database):
    cb = await setup_v1a(api, receiver)
    old = cb["publicKey"]
    status, rotated = await api.post(f"/v1/callbacks/{cb['callbackId']}/rotate-secret")
    assert status == 200, rotated
    new = rotated["publicKey"]
    assert rotated["signingSecret"] is None and new.startswith("whpk_") and new != old
    assert rotated["previousPublicKey"] == old
    _, shown = await api.get(f"/v1/callbacks/{cb['callbackId']}")
    assert (shown["publicKey"], shown["previousPublicKey"]) == (new, old)

    await post_event(api, "during")
    [req] = await receiver.wait_for(1)
    first, second = req.headers["webhook-signature"].split(" ")
    assert first.startswith("v1a,") and second.startswith("v1a,")
    assert verifies(new, Received({**req.headers, "webhook-signature": first}, req.body, 0))
    assert verifies(old, Received({**req.headers, "webhook-signature": second}, req.body, 0))
    assert not verifies(old, Received({**req.headers, "webhook-signature": first}, req.body, 0))

    # The grace period ends (and the version bump a rotation makes tells workers' key caches so at once).
    await database.pool.execute("UPDATE callback_secrets SET valid_until = now() WHERE valid_until IS NOT NULL")
    await database.pool.execute("UPDATE callbacks SET secrets_version = secrets_version + 1")
    await post_event(api, "after")
    after = (await receiver.wait_for(2))[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert verifies(new, after) and not verifies(old, after)
    _, shown = await api.get(f"/v1/callbacks/{cb['callbackId']}")
    assert (shown["publicKey"], shown["previousPublicKey"]) == (new, None)


async def test_switching_v1_to_v1a_and_back_makes_a_new_key_each_time(api: Api, receiver: Receiver):
    status, cb = await api.post("/v1/callbacks", {"name": "hook", "url": receiver.url})
    assert status == 201
    secret = cb["signingSecret"]
    [handshake] = await receiver.wait_for(1, events_only=False)
    await api.post(f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": handshake.json["verificationKey"]})
    await api.post("/v1/subscriptions", {"name": "all", "callbackId": cb["callbackId"], "eventTypes": ["*"]})

    status, switched = await api.patch(f"/v1/callbacks/{cb['callbackId']}", {"signature": "v1a"})
    assert status == 200, switched
    assert switched["signature"] == "v1a" and switched["publicKey"].startswith("whpk_")
    assert "signingSecret" not in switched
    await post_event(api, "switched")
    [req] = await receiver.wait_for(1)
    # During the grace period the old HMAC secret signs beside the new key: a v1 receiver keeps verifying.
    assert [p.split(",")[0] for p in req.headers["webhook-signature"].split(" ")] == ["v1a", "v1"]
    assert verifies(switched["publicKey"], req)
    req.verify(secret)

    status, back = await api.patch(f"/v1/callbacks/{cb['callbackId']}", {"signature": "v1"})
    assert status == 200, back
    assert back["signature"] == "v1" and back["publicKey"] is None
    assert back["signingSecret"].startswith("whsec_") and back["signingSecret"] != secret  # shown this once
    assert back["previousPublicKey"] == switched["publicKey"]  # it still signs during the grace period
    await post_event(api, "back")
    req = (await receiver.wait_for(2))[1]
    req.verify(back["signingSecret"])
    assert verifies(switched["publicKey"], req)

    status, same = await api.patch(f"/v1/callbacks/{cb['callbackId']}", {"signature": "v1"})
    assert status == 200 and "signingSecret" not in same  # no change of scheme, no new key


@pytest.mark.parametrize(
    "body, field",
    [
        ({"signature": "v2"}, "signature"),
        ({"signature": "V1A"}, "signature"),
        ({"signature": None}, "signature"),
        ({"signature": 1}, "signature"),
        ({"signature": "v1a", "format": "ens"}, "signature"),
        ({"signature": "v1a", "format": "customerio"}, "signature"),
    ],
)
async def test_create_refuses_a_bad_signature_naming_the_field(api: Api, receiver: Receiver, body, field):
    status, answer = await api.post("/v1/callbacks", {"name": "hook", "url": receiver.url, **body})
    assert status == 400, answer
    assert answer["error"]["field"] == field


async def test_patch_refuses_v1a_with_another_format_naming_the_field_it_changed(api: Api, receiver: Receiver):
    _, v1a = await api.post("/v1/callbacks", {"name": "a", "url": receiver.url, "signature": "v1a"})
    _, ens = await api.post("/v1/callbacks", {"name": "e", "url": receiver.url, "format": "ens"})
    status, answer = await api.patch(f"/v1/callbacks/{v1a['callbackId']}", {"format": "ens"})
    assert (status, answer["error"]["field"]) == (400, "format")
    status, answer = await api.patch(f"/v1/callbacks/{ens['callbackId']}", {"signature": "v1a"})
    assert (status, answer["error"]["field"]) == (400, "signature")
    status, answer = await api.patch(f"/v1/callbacks/{ens['callbackId']}", {"signature": "v1x"})
    assert (status, answer["error"]["field"]) == (400, "signature")
    _, unchanged = await api.get(f"/v1/callbacks/{v1a['callbackId']}")
    assert (unchanged["format"], unchanged["signature"]) == ("standard", "v1a")
    status, both = await api.patch(f"/v1/callbacks/{v1a['callbackId']}", {"format": "ens", "signature": "v1"})
    assert status == 200 and (both["format"], both["signature"]) == ("ens", "v1"), both


async def test_the_private_key_is_never_in_an_answer_or_a_log_line(
    api: Api, receiver: Receiver, database, settings, capsys
):
    answers = [await setup_v1a(api, receiver)]
    cb_id = answers[0]["callbackId"]
    answers.append((await api.post(f"/v1/callbacks/{cb_id}/rotate-secret"))[1])
    await post_event(api, "m-1")
    await receiver.wait_for(1)
    for path in [f"/v1/callbacks/{cb_id}", "/v1/callbacks", f"/v1/callbacks/{cb_id}/deliveries",
                 f"/v1/callbacks/{cb_id}/attempts", "/openapi.json"]:  # fmt: skip
        answers.append((await api.get(path))[1])
    answers.append((await api.patch(f"/v1/callbacks/{cb_id}", {"description": "x"}))[1])
    stored = [bytes(r["secret_enc"]) for r in await database.pool.fetch("SELECT secret_enc FROM callback_secrets")]
    private = [load_keyring(settings).decrypt(enc) for enc in stored]
    assert len(private) == 2 and all(k.startswith("whsk_") for k in private)
    logged = capsys.readouterr()
    seen = repr(answers) + "".join(f"{r.headers}{r.body.decode()}" for r in receiver.requests) + logged.out + logged.err
    assert "whpk_" in seen and "webhook" in logged.out + logged.err  # what was searched holds the output
    for key in private:
        seed = key.removeprefix("whsk_")
        assert seed not in seen
        assert all(seed.encode() not in enc for enc in stored)  # encrypted at rest


@pytest.fixture
async def console(app_client: Any, api: Api) -> AsyncIterator[Console]:
    c = Console(str(app_client.make_url("/")))
    await c.sign_in(api.key)
    yield c
    await c.close()


async def test_the_console_page_shows_the_scheme_and_public_key(api: Api, receiver: Receiver, console: Console):
    cb = await setup_v1a(api, receiver)
    status, page = await console.get(f"/console/callbacks/{cb['callbackId']}")
    assert status == 200
    assert "v1a" in page and cb["publicKey"] in html.unescape(page)
