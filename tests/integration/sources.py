"""Helpers for the source tests: post to a source's public address as the provider would."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from dispatcher import db
from tests.conftest import Api


async def source_post(api: Api, source: dict[str, Any], body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST `body` to the source's ingest URL (its path, on the test server), with no API key."""
    resp = await api.client.post(urlsplit(source["url"]).path, data=body, headers=headers)
    answer = await resp.json() if resp.content_type == "application/json" else await resp.text()
    return resp.status, answer


async def event_count(database: db.Database) -> int:
    return int(await database.pool.fetchval("SELECT count(*) FROM events"))
