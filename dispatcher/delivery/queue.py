"""The delivery queue's statements (sql/queue.sql): claim due deliveries under a lease (one per message at a
time for ordered callbacks, within the rate limit of limited ones), record outcomes, hand back what will
not be sent, keep callback health and pace, and read the keys a request is signed with.

The worker never sees SQL: it calls these functions. Their keyword arguments name what each
statement's positional parameters mean, so callers cannot transpose them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeAlias

import asyncpg

from dispatcher.crypto import Keyring
from dispatcher.db import queries
from dispatcher.delivery import policy

SQL = queries("queue")
Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection


class Request(NamedTuple):
    """One HTTP request made: a row of the attempt log."""

    account_id: int
    callback_id: int
    webhook_id: str | None  # None when the request could not be built
    events: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error_kind: str | None
    excerpt: str | None


class Result(NamedTuple):
    """What one request decided for one delivery it carried."""

    delivery_id: int
    request: int  # 1-based position of its request in `requests`
    status: str  # succeeded | pending | failed
    attempts: int
    delay: float  # seconds until it is due again (pending)
    message_key: str | None = None  # an ordered callback's delivery: its message, whose later events it holds back
    event_id: int | None = None  # … and its event (with message_key)


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as one list per column: the arrays the statements unnest."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


async def claim(
    conn: Conn, worker: str, *, held: dict[int, tuple[int, int]], share: int, limit: int, lease: float,
    linger: float, room: int,
) -> list[asyncpg.Record]:  # fmt: skip
    """Lease due deliveries to `worker`: at most `limit` rows and `room` jobs, no callback beyond its share.
    `held`: callback → (jobs the worker holds for it, its share); any other callback's share is `share`."""
    known = list(held)
    jobs, shares = [held[cb][0] for cb in known], [held[cb][1] for cb in known]
    return await conn.fetch(SQL["claim"], worker, known, jobs, shares, share, limit, lease, linger, room)


async def complete(conn: Conn, *, worker: str, requests: Sequence[Request], results: Sequence[Result]) -> None:
    """Log each request and apply each delivery's result, where `worker` still holds its lease; a
    finished delivery of an ordered callback then makes the next event of its message due. Call it in a
    transaction: the release is a second statement, which sees what was queued while the first ran."""
    await conn.execute(SQL["complete"], *_columns(requests, 9), *_columns(results, 7), worker)
    finished = [(requests[r.request - 1].callback_id, r.message_key, r.event_id, r.delivery_id)
                for r in results if r.message_key is not None and r.status != "pending"]  # fmt: skip
    if finished:
        await conn.execute(SQL["release_next"], *_columns(finished, 4))


async def take_token(conn: Conn, callback_id: int) -> float | None:
    """Take a token for one request to this rate-limited callback: 0.0 when taken, else the seconds until
    the next one comes; None when the callback has no limit."""
    return await conn.fetchval(SQL["take_token"], callback_id)


async def slow_down(conn: Conn, callback_ids: Sequence[int], *, seconds: float) -> None:
    """Halve the pace of these rate-limited callbacks for `seconds` (their receivers answered 429)."""
    await conn.execute(SQL["slow_down"], list(callback_ids), seconds)


async def release(conn: Conn, *, worker: str, delivery_ids: Sequence[int], due_in: float) -> None:
    """Hand back deliveries `worker` holds but will not send, due again in `due_in` seconds."""
    await conn.execute(SQL["release"], worker, list(delivery_ids), due_in)


async def lock_callbacks(conn: asyncpg.Connection, callback_ids: Sequence[int]) -> list[asyncpg.Record]:
    """The current health of these callbacks, locked for the rest of the transaction (in id order)."""
    return await conn.fetch(SQL["lock_callbacks"], sorted(callback_ids))


async def set_health(conn: asyncpg.Connection, health: Sequence[tuple[int, policy.Health]]) -> None:
    """Store each callback's health as the policy decided it."""
    rows = [(cb, h.status, h.consecutive_failures, h.failing_since, h.paused_until, h.disabled_reason)
            for cb, h in health]  # fmt: skip
    await conn.execute(SQL["set_health"], *_columns(rows, 6))


async def signing_secrets(conn: Conn, keyring: Keyring, callback_id: int) -> list[str]:
    """The callback's live signing secrets (`whsec_…`), newest first."""
    rows = await conn.fetch(SQL["live_secrets"], callback_id)
    return [keyring.decrypt(r["secret_enc"]) for r in rows]


async def notify(conn: asyncpg.Connection) -> None:
    """Wake the workers of every process (at commit, when called in a transaction)."""
    await conn.execute(SQL["notify"])
