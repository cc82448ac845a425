"""Accounts (tenants) and their API keys: random, shown once, stored as SHA-256, scoped, IP-restrictable."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass

import asyncpg

from dispatcher.db import queries
from dispatcher.errors import Conflict, NotFound

SQL = queries("accounts")
SCOPES = ("events:write", "events:read", "callbacks:manage", "messages:send", "*")
KEY_PREFIX = "dk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the account and what its key may do."""

    key_id: int
    account_id: int
    scopes: tuple[str, ...]
    allowed_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def may(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes

    def allows_ip(self, address: str | None) -> bool:
        if not self.allowed_cidrs:
            return True
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allowed_cidrs if net.version == ip.version)


def hash_key(key: str) -> bytes:
    # The key carries 256 random bits, so a fast hash is enough: no dictionary to attack.
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_account(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    try:
        return await conn.fetchrow(SQL["create_account"], name)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"account {name!r} already exists", field="name") from None


async def get_account(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    row = await conn.fetchrow(SQL["get_account"], name)
    if row is None:
        raise NotFound(f"no account named {name!r}")
    return row


async def list_accounts(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(SQL["list_accounts"])


async def set_suppress_on_bounce(conn: asyncpg.Connection, name: str, on: bool) -> asyncpg.Record:
    """Whether the account's hard bounces and complaints suppress the recipient from then on (the list
    already made stays as it is)."""
    row = await conn.fetchrow(SQL["set_suppress_on_bounce"], name, on)
    if row is None:
        raise NotFound(f"no account named {name!r}")
    return row


async def create_key(
    conn: asyncpg.Connection, account_id: int, scopes: list[str], cidrs: list[str] | None = None
) -> tuple[int, str]:
    """Returns (key id, key). The key is never stored and cannot be shown again."""
    for scope in scopes:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; choose from {', '.join(SCOPES)}")
    networks = [ipaddress.ip_network(c, strict=False) for c in cidrs or []]
    key = new_key()
    key_id = await conn.fetchval(SQL["create_key"], account_id, hash_key(key), key[:10], scopes, networks)
    return key_id, key


async def list_keys(conn: asyncpg.Connection, account_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(SQL["list_keys"], account_id)


async def revoke_key(conn: asyncpg.Connection, key_id: int) -> bool:
    return await conn.fetchrow(SQL["revoke_key"], key_id) is not None


async def revoke_account_key(conn: asyncpg.Connection | asyncpg.Pool, account_id: int, key_id: int) -> bool:
    """Revoke one of the account's own keys; False when it has no such live key."""
    return await conn.fetchrow(SQL["revoke_account_key"], account_id, key_id) is not None


async def authenticate(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> Principal | None:
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    row = await conn.fetchrow(SQL["authenticate"], hash_key(key))
    if row is None:
        return None
    return Principal(row["id"], row["account_id"], tuple(row["scopes"]), tuple(row["allowed_cidrs"]))


async def touch_keys(conn: asyncpg.Connection | asyncpg.Pool, key_ids: list[int]) -> None:
    """Record that these keys were just used (shown by `dispatcher keys list`)."""
    await conn.execute(SQL["touch_keys"], key_ids)


async def bootstrap(conn: asyncpg.Connection) -> str | None:
    """On an empty database create the `default` account and a `*` key; return the key, else None."""
    async with conn.transaction():
        await conn.execute(SQL["lock_bootstrap"])
        if await conn.fetchval(SQL["any_account"]):
            return None
        account = await create_account(conn, "default")
        _, key = await create_key(conn, account["id"], ["*"])
        return key
