"""Prometheus metrics: one registry per process (built in the app factory), counters fed by the
request middleware, the webhook worker and the mail sender; queue gauges read from PostgreSQL at
scrape time so they are true across every process sharing the database."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dispatcher.db import queries

SQL = queries("metrics")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("dispatcher_http_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.events = Counter("dispatcher_events_ingested", "Events recorded through the API", ["type"], registry=r)
        self.deliveries = Counter("dispatcher_deliveries", "Delivery attempts by outcome", ["outcome"], registry=r)
        self.attempt_seconds = Histogram(
            "dispatcher_webhook_attempt_seconds", "Duration of webhook requests", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.inbound_events = Counter(
            "dispatcher_inbound_events", "Provider events received through sources", ["provider", "outcome"], registry=r
        )
        self.inbound_refused = Counter(
            "dispatcher_inbound_refused",
            "Provider requests refused as not authentic",
            ["provider", "reason"],
            registry=r,
        )
        self.inbound_mail = Counter(
            "dispatcher_inbound_mail", "Mail at the bounce listener by outcome", ["outcome"], registry=r
        )
        self.mail = Counter("dispatcher_mail", "Mail outcomes", ["outcome"], registry=r)
        self.claims = Counter(
            "dispatcher_worker_claims", "Claims of due deliveries made by the webhook worker", registry=r
        )
        self.pending = Gauge("dispatcher_deliveries_pending", "Pending deliveries (all callbacks)", registry=r)
        self.oldest_due = Gauge("dispatcher_oldest_due_delivery_seconds", "Age of the oldest due delivery", registry=r)
        self.mail_queued = Gauge("dispatcher_mail_queued", "Messages queued or scheduled", registry=r)
        self.callbacks = Gauge("dispatcher_callbacks", "Callbacks by state", ["status"], registry=r)

    def observe_request(self, request: web.Request, status: int) -> None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        self.requests.labels(request.method, route, str(status)).inc()

    def observe_attempt(self, response: Any, count: int) -> None:
        self.attempt_seconds.observe(response.duration_ms / 1000)
        self.deliveries.labels("succeeded" if response.ok else "failed_attempt").inc(count)

    async def render(self, pool: asyncpg.Pool) -> bytes:
        async with pool.acquire() as conn:
            queue = await conn.fetchrow(SQL["queue_gauges"])
            states = await conn.fetch(SQL["callback_gauges"])
        self.pending.set(queue["pending"])
        self.oldest_due.set(float(queue["oldest_due"]))
        self.mail_queued.set(queue["mail_queued"])
        for status in ("pending_verification", "active", "failing", "disabled"):
            self.callbacks.labels(status).set(next((s["n"] for s in states if s["status"] == status), 0))
        return generate_latest(self.registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST
