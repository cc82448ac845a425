"""The request a delivery's page shows is the one the worker sent, in every callback format, except the
signatures, which depend on secrets and are not stored."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dispatcher.crypto import new_signing_secret
from dispatcher.delivery import formats, outbound
from dispatcher.delivery.history import request_shown

STARTED = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def row(fmt: str, batch: int) -> dict[str, object]:
    """A delivery_event row: the claim's shape plus the callback's format and batch size."""
    return {
        "id": 7, "account_id": 3, "event_id": 42, "type": "bounced", "message_key": "order-1", "definition_key": "receipt",
        "recipient": "ann@example.com", "occurred_at": STARTED, "data": '{"bounceType": "hard", "reason": "<x>"}',
        "callback_name": "hook", "format": fmt, "max_batch_size": batch,
    }  # fmt: skip


@pytest.mark.parametrize("fmt", formats.FORMATS)
@pytest.mark.parametrize("batch", [1, 10], ids=["single", "batching"])
def test_the_shown_request_is_the_sent_one_without_its_signatures(fmt: str, batch: int):
    event = row(fmt, batch)
    timestamp = int(STARTED.timestamp())
    msg_id, body, headers = formats.request(
        fmt, [event], batch > 1, [new_signing_secret()], timestamp, outbound.USER_AGENT
    )
    shown_body, shown_headers = request_shown(event, msg_id, STARTED)
    assert shown_body == body.decode()
    signed = [name for name in headers if name in ("webhook-signature", "x-sfmc-ens-signature", "x-cio-signature")]
    assert signed and all(shown_headers[name] == "(not stored)" for name in signed)
    assert {k: v for k, v in shown_headers.items() if k not in signed} == {
        k: v for k, v in headers.items() if k not in signed
    }


def test_a_batchs_request_shows_the_batchs_webhook_id():
    _, headers = request_shown(row("standard", 10), "batch_0123abcd", STARTED)
    assert headers["webhook-id"] == "batch_0123abcd" and headers["webhook-timestamp"] == str(int(STARTED.timestamp()))


def test_a_deleted_callbacks_request_is_shown_in_the_standard_format():
    body, headers = request_shown({**row("standard", 1), "format": None, "max_batch_size": None}, None, STARTED)
    assert body.startswith('{"type":"bounced"') and headers["webhook-id"] == "dlv_7"
