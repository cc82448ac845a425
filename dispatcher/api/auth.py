"""Bearer-key authentication, scopes, client-IP restriction and the per-key rate limit."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from dispatcher import accounts, oauth
from dispatcher.accounts import Principal
from dispatcher.api.keys import DB, KEYRING, PRINCIPAL, SETTINGS
from dispatcher.db import DB_ERRORS, Database
from dispatcher.errors import Forbidden, RateLimited, Unauthorized
from dispatcher.logs import get_logger

log = get_logger(__name__)


@dataclass
class TokenBuckets:
    """Per-key token buckets in this process. With several API replicas each enforces the rate
    on its own share of traffic: the limit protects the service, it is not a billing meter."""

    rate: float
    buckets: dict[int, tuple[float, float]] = field(default_factory=dict)

    def take(self, key_id: int) -> float:
        """0 when allowed, else seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        burst = max(self.rate, 1.0)
        tokens, last = self.buckets.get(key_id, (burst, now))
        tokens = min(burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self.buckets[key_id] = (tokens - 1, now)
            return 0.0
        self.buckets[key_id] = (tokens, now)
        return (1 - tokens) / self.rate


RATE_LIMITER = web.AppKey("rate_limiter", TokenBuckets)
KEY_CHANNEL = "dispatcher_keys"


class KeyCache:
    """Authenticated keys, remembered so a request costs one database round trip instead of two.

    Exact, not eventually consistent: revoking a key NOTIFYs every process, whose listener drops it
    at once; while the listener connection is down the cache is bypassed and emptied.
    """

    def __init__(self, database: Database, ttl: float = 300.0, size: int = 10_000):
        self.db, self.ttl, self.size = database, ttl, size
        self._entries: dict[bytes, tuple[Principal, float]] = {}
        self._listener: asyncpg.Connection | None = None
        # Bumped by every revocation: a lookup that raced with one is not cached.
        self.generation = 0
        self._reconnecting: asyncio.Task[None] | None = None
        self._last_attempt = 0.0
        self._used: set[int] = set()
        self._noting: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    def get(self, key_hash: bytes) -> Principal | None:
        if not self.live:
            self._entries.clear()
            self._reconnect_soon()
            return None
        entry = self._entries.get(key_hash)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key_hash: bytes, principal: Principal, generation: int) -> None:
        if self.live and generation == self.generation:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[key_hash] = (principal, time.monotonic() + self.ttl)

    def used(self, key_id: int) -> None:
        """Note that a key looked up in the database was used. Written in the background, one statement
        at a time: authentication never waits for (or fails on) a write. Lookups happen once per cache
        entry, so this is about once per key per process every `ttl` seconds."""
        self._used.add(key_id)
        if self._noting is None or self._noting.done():
            self._noting = asyncio.create_task(self._note_used())

    async def _note_used(self) -> None:
        while self._used:
            key_ids, self._used = sorted(self._used), set()
            try:
                await accounts.touch_keys(self.db.pool, key_ids)
            except DB_ERRORS as exc:  # only the bookkeeping is lost
                log.warning("could not record when API keys were last used", error=str(exc) or type(exc).__name__)

    def _forget(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.generation += 1
        self._entries.pop(bytes.fromhex(payload), None)

    def _reconnect_soon(self) -> None:
        """Re-listen in the background (at most every 5 s); until then every request authenticates."""
        now = time.monotonic()
        if (self._reconnecting is None or self._reconnecting.done()) and now - self._last_attempt >= 5:
            self._last_attempt = now
            self._reconnecting = asyncio.create_task(self.start())

    async def start(self) -> None:
        try:
            self._listener = await asyncpg.connect(self.db.url, timeout=5)
            await self._listener.add_listener(KEY_CHANNEL, self._forget)
            self._listener.add_termination_listener(lambda _c: self._entries.clear())
        except DB_ERRORS:
            self._listener = None  # no cache then; every request authenticates against the database

    async def stop(self) -> None:
        if self._noting is not None:
            await asyncio.gather(self._noting, return_exceptions=True)
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            await asyncio.gather(self._reconnecting, return_exceptions=True)
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()


KEY_CACHE = web.AppKey("key_cache", KeyCache)


async def authorize(request: web.Request, scope: str, *, access_tokens: bool = False) -> Principal:
    """`access_tokens`: an OAuth2 access token (dispatcher/oauth.py) stands for its API key too."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    key = key.strip()
    if not key.isascii() or len(key) > 200:
        raise Unauthorized("invalid or revoked API key")
    if access_tokens and oauth.is_token(key):
        return _admit(request, await _token_principal(request, key), scope)
    cache = request.app.get(KEY_CACHE)
    key_hash = accounts.hash_key(key)
    principal = cache.get(key_hash) if cache else None
    if principal is None:
        generation = cache.generation if cache else 0
        principal = await accounts.authenticate(request.app[DB].pool, key)
        if principal is not None and cache:
            cache.put(key_hash, principal, generation)
            cache.used(principal.key_id)
    if principal is None:
        raise Unauthorized("invalid or revoked API key")
    return _admit(request, principal, scope)


async def _token_principal(request: web.Request, token: str) -> Principal:
    claim = oauth.read(oauth.token_key(request.app[KEYRING]), token)
    principal = await oauth.principal(request.app[DB].pool, claim) if claim else None
    if principal is None:
        raise Unauthorized("invalid, expired or revoked access token")
    return principal


def _admit(request: web.Request, principal: Principal, scope: str) -> Principal:
    request[PRINCIPAL] = principal
    if not principal.allows_ip(request.remote):
        raise Forbidden("this key may not be used from this address")
    if not principal.may(scope):
        raise Forbidden(f"this key lacks the {scope!r} scope")
    wait = request.app[RATE_LIMITER].take(principal.key_id)
    if wait:
        retry = max(1, round(wait + 0.5))
        raise RateLimited(
            f"more than {request.app[SETTINGS].rate_limit_per_second:g} requests per second for this key",
            headers={"Retry-After": str(retry)},
        )
    return principal
