"""Sessions of the browser console and of portal links.

A session is a random token, shown once (in a cookie or in a portal link's URL) and stored as its
SHA-256. A console session carries the account and scopes of the API key that signed in and ends when
that key is revoked; a portal session reaches one account's chosen callbacks (or all of them) and
nothing else. Both end at sign-out, at their expiry, or after `idle` without a request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from dispatcher import ids
from dispatcher.db import queries
from dispatcher.errors import NotFound

SQL = queries("sessions")
PORTAL_SCOPES = ("callbacks:manage",)


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: bytes
    account_id: int
    kind: str  # console | portal
    key_id: int | None
    scopes: tuple[str, ...]
    callback_ids: tuple[int, ...] | None  # None: every callback of the account
    csrf_token: str
    expires_at: datetime

    def may(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes

    def reaches(self, callback_id: int) -> bool:
        return self.callback_ids is None or callback_id in self.callback_ids


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def start(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    account_id: int,
    kind: str,
    scopes: tuple[str, ...],
    lifetime: timedelta,
    key_id: int | None = None,
    callback_ids: list[int] | None = None,
) -> tuple[str, datetime]:
    """A new session; returns (token, expires_at). The token is never stored."""
    token = secrets.token_urlsafe(32)
    expires_at = await conn.fetchval(
        SQL["create_session"], hash_token(token), account_id, kind, key_id, list(scopes), callback_ids,
        secrets.token_urlsafe(24), lifetime,
    )  # fmt: skip
    return token, expires_at


async def start_portal(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: int, callback_ids: list[int] | None, lifetime: timedelta
) -> tuple[str, datetime]:
    """A portal link's session, reaching `callback_ids` (None: every callback of the account, present and
    future). Every id must be the account's own."""
    if callback_ids is not None:
        owned = {row["id"] for row in await conn.fetch(SQL["owned_callbacks"], account_id, callback_ids)}
        missing = [n for n in callback_ids if n not in owned]
        if missing:
            raise NotFound(f"no such callback: {ids.encode('cb', missing[0])}", field="callbackIds")
    return await start(
        conn, account_id=account_id, kind="portal", scopes=PORTAL_SCOPES, lifetime=lifetime,
        callback_ids=sorted(set(callback_ids)) if callback_ids is not None else None,
    )  # fmt: skip


async def resume(conn: asyncpg.Connection | asyncpg.Pool, token: str, *, kind: str, idle: timedelta) -> Session | None:
    """The live session this token opens (and note that it was used), else None."""
    if not token or len(token) > 100:
        return None
    row = await conn.fetchrow(SQL["resume_session"], hash_token(token), idle, kind)
    if row is None:
        return None
    ids = row["callback_ids"]
    return Session(
        row["token_hash"], row["account_id"], row["kind"], row["key_id"], tuple(row["scopes"]),
        tuple(ids) if ids is not None else None, row["csrf_token"], row["expires_at"],
    )  # fmt: skip


async def end(conn: asyncpg.Connection | asyncpg.Pool, session: Session) -> None:
    await conn.execute(SQL["end_session"], session.token_hash)


async def add_callback(conn: asyncpg.Connection | asyncpg.Pool, session: Session, callback_id: int) -> None:
    """A callback made through a portal link joins the link's scope."""
    await conn.execute(SQL["add_callback"], session.token_hash, callback_id)


async def purge(conn: asyncpg.Connection | asyncpg.Pool, idle: timedelta) -> int:
    status = await conn.execute(SQL["purge_sessions"], idle)
    return int(status.split()[-1])
