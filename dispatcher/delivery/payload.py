"""Webhook bodies: one event's JSON payload, and the body of a request (one payload, or a batch).

The claim returns each event's `data` as the text PostgreSQL stores it, so numbers reach receivers
exactly as stored; the envelope fields are spliced around it here rather than built by the claim,
which is the one statement every delivery waits on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from dispatcher import ids


def event_payload(row: Mapping[str, Any]) -> str:
    """`{"type", "timestamp", "data": {...the event's data, eventId, messageKey, definitionKey,
    recipient, occurredAt}}` for a claimed row. Its `data` is JSON object text from which the claim
    removed any keys the envelope also has, so the envelope's win."""
    occurred = row["occurred_at"].isoformat()  # as the history API writes it
    envelope = orjson.dumps(
        {
            "eventId": ids.encode("evt", row["event_id"]),
            "messageKey": row["message_key"],
            "definitionKey": row["definition_key"],
            "recipient": row["recipient"],
            "occurredAt": occurred,
        }
    ).decode()
    data: str = row["data"]
    if data.strip() != "{}":
        envelope = f"{data.rstrip()[:-1]},{envelope[1:]}"
    return f'{{"type":{orjson.dumps(row["type"]).decode()},"timestamp":"{occurred}","data":{envelope}}}'


def request_body(rows: Sequence[Mapping[str, Any]], batched: bool) -> tuple[str, bytes]:
    """(webhook-id, body). The id is stable across retries of the same delivery; a batch is the
    events' payloads in the order they occurred, its id a digest of the deliveries it carries."""
    if not batched:
        r = rows[0]
        return ids.encode("dlv", r["id"]), event_payload(r).encode()
    ordered = sorted(rows, key=lambda r: (r["occurred_at"], r["event_id"]))
    digest = hashlib.sha256(",".join(str(r["id"]) for r in ordered).encode()).hexdigest()[:24]
    return f"batch_{digest}", f"[{','.join(event_payload(r) for r in ordered)}]".encode()
