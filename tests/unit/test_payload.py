"""Webhook bodies, built by the worker around the event data text the claim returns."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from dispatcher.delivery.payload import event_payload, request_body

OCCURRED = datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)


def row(i: int = 1, data: str = "{}", **kw: Any) -> dict[str, Any]:
    return {
        "id": 100 + i, "event_id": i, "type": "sent", "message_key": f"m-{i}", "definition_key": "receipt",
        "recipient": "a@example.com", "occurred_at": OCCURRED, "data": data,
    } | kw  # fmt: skip


def test_payload_wraps_the_event_data_in_the_standard_envelope():
    p = json.loads(event_payload(row(7, '{"orderId": 7, "subject": "Shipped"}')))
    assert p == {
        "type": "sent",
        "timestamp": "2026-01-02T03:04:05.120000+00:00",
        "data": {
            "orderId": 7, "subject": "Shipped", "eventId": "evt_7", "messageKey": "m-7",
            "definitionKey": "receipt", "recipient": "a@example.com", "occurredAt": "2026-01-02T03:04:05.120000+00:00",
        },
    }  # fmt: skip


def test_payload_of_an_event_without_data_has_the_envelope_fields_only():
    p = json.loads(event_payload(row(data="{}", definition_key=None, recipient=None)))
    assert p["data"] == {
        "eventId": "evt_1", "messageKey": "m-1", "definitionKey": None, "recipient": None,
        "occurredAt": "2026-01-02T03:04:05.120000+00:00",
    }  # fmt: skip


def test_payload_keeps_numbers_and_text_exactly_as_stored():
    stored = '{"big": 123456789012345678901234567890, "price": 1.10, "note": "a \\"quoted\\" }"}'
    text = event_payload(row(data=stored))
    assert '"big": 123456789012345678901234567890, "price": 1.10' in text
    assert json.loads(text)["data"]["note"] == 'a "quoted" }'


def test_payload_timestamps_are_written_as_isoformat_with_utc_offset():
    whole_second = OCCURRED.replace(microsecond=0)
    p = json.loads(event_payload(row(occurred_at=whole_second)))
    assert p["timestamp"] == p["data"]["occurredAt"] == "2026-01-02T03:04:05+00:00"


def test_single_request_body_is_one_payload_with_the_delivery_id_as_webhook_id():
    webhook_id, body = request_body([row(3)], batched=False)
    assert webhook_id == "dlv_103"
    assert json.loads(body)["data"]["eventId"] == "evt_3"


def test_batch_body_is_the_payloads_in_the_order_the_events_occurred_and_its_id_is_stable():
    later = row(1, occurred_at=OCCURRED + timedelta(seconds=1))
    earlier = row(2)
    webhook_id, body = request_body([later, earlier], batched=True)
    assert [p["data"]["eventId"] for p in json.loads(body)] == ["evt_2", "evt_1"]
    assert request_body([earlier, later], batched=True)[0] == webhook_id
    assert webhook_id.startswith("batch_")
    assert request_body([earlier], batched=True)[0] != webhook_id


def test_the_claim_strips_exactly_the_keys_the_envelope_adds():
    """The claim removes the envelope's keys from the event data; the worker adds them back."""
    from dispatcher.delivery.queue import SQL

    lists = set(re.findall(r"'\{([^}]*)\}'::text\[\]", SQL["claim"]))
    assert len(lists) == 1
    assert set(lists.pop().split(",")) == set(json.loads(event_payload(row()))["data"])
