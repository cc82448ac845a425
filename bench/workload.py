"""The events the bench records, the webhook bodies they become, and the API steps every scenario
shares (callback registration and verification, posting events, measuring a delivery round)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.receiver import Receiver
from bench.service import Api


def event(i: int, prefix: str = "m", type_: str = "sent") -> dict[str, Any]:
    """One API event; every scenario sends this shape."""
    return {
        "type": type_,
        "messageKey": f"{prefix}-{i}",
        "definitionKey": "order-confirmation",
        "recipient": f"user{i}@example.com",
        "data": {"orderId": i, "subject": "Your order has shipped"},
    }


def webhook_payload(i: int, prefix: str = "m") -> dict[str, Any]:
    """What the worker sends for event(i) (built by the claim in dispatcher/sql/queue.sql)."""
    e = event(i, prefix)
    occurred = datetime.now(UTC).isoformat()
    data = {
        **e["data"],
        "eventId": f"evt_{i}",
        "messageKey": e["messageKey"],
        "definitionKey": e["definitionKey"],
        "recipient": e["recipient"],
        "occurredAt": occurred,
    }
    return {"type": e["type"], "timestamp": occurred, "data": data}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign_headers(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers, computed as the worker does."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    ts = int(time.time())
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "user-agent": "dispatcher-bench",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


@dataclass
class Callback:
    id: str
    name: str  # the receiver hook name
    secret: str


async def register_callback(
    api: Api, receiver: Receiver, name: str, *, port: int = 0, batch: int = 1, event_types: list[str] | None = None,
    subscribe: bool = True, path: str = "hook",
) -> Callback:  # fmt: skip
    """POST /v1/callbacks → the receiver gets the key → verify → subscribe. `path`: "hang" for a receiver
    that never answers an event."""
    url = receiver.url(name, port, path=path)
    cb = await api.call("POST", "/v1/callbacks", {"name": name, "url": url, "maxBatchSize": batch})
    key = await receiver.verification_key(name)
    body = await api.call("POST", f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": key})
    assert body["status"] == "active", body
    await receiver.set_secret(name, cb["signingSecret"])
    if subscribe:
        await api.call(
            "POST",
            "/v1/subscriptions",
            {"name": f"{name}-sub", "callbackId": cb["callbackId"], "eventTypes": event_types or ["*"]},
        )
    return Callback(cb["callbackId"], name, cb["signingSecret"])


async def set_status(api: Api, callbacks: list[Callback], status: str) -> None:
    await asyncio.gather(*(api.call("PATCH", f"/v1/callbacks/{c.id}", {"status": status}) for c in callbacks))


async def post_events(
    api: Api, items: list[dict[str, Any]], *, batch: int = 100, clients: int = 8
) -> list[tuple[float, float]]:
    """POST the events in batches from `clients` concurrent loops; returns (start, end) per request."""
    chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
    it = iter(chunks)
    timings: list[tuple[float, float]] = []

    async def client() -> None:
        for chunk in it:
            t0 = time.monotonic()
            await api.call("POST", "/v1/events", {"events": chunk} if batch > 1 else chunk[0])
            timings.append((t0, time.monotonic()))

    await asyncio.gather(*(client() for _ in range(clients)))
    return timings


@dataclass
class Round:
    """One delivery measurement: from re-enabling the callbacks to the last expected arrival."""

    events: int
    requests: int
    seconds: float
    first_arrival: float  # seconds after the start
    verified: int  # sampled signatures the receiver checked with standardwebhooks
    connections: int  # TCP connections the requests arrived on

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def deliver_round(
    api: Api, receiver: Receiver, callbacks: list[Callback], items: list[dict[str, Any]], *, timeout: float = 300,
    measured: Callable[[], AbstractAsyncContextManager[Any]] = contextlib.nullcontext,
) -> Round:  # fmt: skip
    """Record `items` while the callbacks are disabled, then time PATCH active → all arrived."""
    await set_status(api, callbacks, "disabled")
    await post_events(api, items)
    await receiver.reset()
    names = [c.name for c in callbacks]
    expected = len(items) * len(callbacks)
    async with measured():
        t0 = time.monotonic()
        await set_status(api, callbacks, "active")
        stats, last = await receiver.wait_events(names, expected, timeout=timeout)
    if stats["verified_bad"]:
        raise RuntimeError(f"{stats['verified_bad']} sampled webhook signatures did not verify")
    firsts = [stats["counters"][n]["first"] for n in names]
    requests, connections = Receiver.count(stats, names, "requests"), Receiver.count(stats, names, "connections")
    return Round(expected, requests, last - t0, min(firsts) - t0, stats["verified_ok"], connections)
