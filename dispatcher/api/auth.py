"""Bearer-key authentication, scopes, client-IP restriction and the per-key rate limit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dispatcher import accounts
from dispatcher.accounts import Principal
from dispatcher.api.keys import DB, PRINCIPAL, SETTINGS
from dispatcher.errors import Forbidden, RateLimited, Unauthorized


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


async def authorize(request: web.Request, scope: str, conn: Any = None) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    principal = await accounts.authenticate(conn or request.app[DB].pool, key.strip())
    if principal is None:
        raise Unauthorized("invalid or revoked API key")
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
