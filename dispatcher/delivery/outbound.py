"""Outbound HTTP to receivers: URL rules, the SSRF guard (at registration and at connect time), and one POST.

A host is refused when any address it resolves to is loopback, private, link-local, CGNAT,
multicast, unspecified, reserved or documentation space, in IPv4 or IPv6 (IPv4-mapped, 6to4,
Teredo and NAT64 forms are unwrapped first), unless the address is in DISPATCHER_ALLOWED_NETWORKS.
The connect-time check runs inside aiohttp's resolver, so DNS rebinding after registration does
not get through. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from dispatcher import __version__
from dispatcher.errors import Forbidden, InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RESPONSE_EXCERPT = 4096
USER_AGENT = f"dispatcher/{__version__}"

_EXTRA_FORBIDDEN = [
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15",
              "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
              "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8")
]  # fmt: skip
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class ForbiddenAddress(OSError):
    """Raised from the resolver so aiohttp reports a connection error we can name."""


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_forbidden(ip: IPAddress, allowed: Sequence[Network] = ()) -> bool:
    # A wrapped IPv4 address (mapped, 6to4, NAT64) is judged by the IPv4 address it carries.
    embedded = _embedded_v4(ip)
    candidates: list[IPAddress] = [embedded] if embedded is not None else [ip]
    if any(c in net for c in candidates for net in allowed if net.version == c.version):
        return False
    for c in candidates:
        if (
            not c.is_global
            or c.is_private
            or c.is_loopback
            or c.is_link_local
            or c.is_multicast
            or c.is_reserved
            or c.is_unspecified
            or any(c in net for net in _EXTRA_FORBIDDEN if net.version == c.version)
        ):
            return True
    return False


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def check_url_syntax(url: str, *, allow_http: bool) -> urllib.parse.SplitResult:
    """400 for a malformed URL; 403 for plain http where this deployment requires https (a policy that the
    API document cannot state)."""
    field = "url"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InvalidRequest("is not a valid URL", field=field) from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest("must be an http(s) URL", field=field)
    if parts.scheme == "http" and not allow_http:
        raise Forbidden(
            "must use https (set DISPATCHER_ALLOW_HTTP_CALLBACKS=true to allow http)",
            field=field,
            code="https_required",
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("must not carry credentials", field=field)
    if not parts.hostname:
        raise InvalidRequest("has no host", field=field)
    if len(url) > 2048:
        raise InvalidRequest("is longer than 2048 characters", field=field)
    return parts


async def check_url(url: str, *, allow_http: bool, allowed: Sequence[Network]) -> None:
    """Registration-time check: syntax, then every address the host resolves to. A host that does not resolve,
    or resolves to a forbidden address, is refused with 403: the URL is well formed, this deployment will not
    call it."""
    parts = check_url_syntax(url, allow_http=allow_http)
    host = parts.hostname or ""
    literal = parse_ip(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise Forbidden(f"host {host!r} does not resolve", field="url", code="unresolvable_host") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses or any(is_forbidden(a, allowed) for a in addresses):
        raise Forbidden(
            "resolves to a private, loopback or otherwise reserved address (see DISPATCHER_ALLOWED_NETWORKS)",
            field="url",
            code="forbidden_address",
        )


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops forbidden addresses, re-checked on every new connection."""

    def __init__(self, allowed: Sequence[Network]):
        self._inner = DefaultResolver()
        self._allowed = list(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        safe = [r for r in results if not is_forbidden(ipaddress.ip_address(r["host"].split("%")[0]), self._allowed)]
        if not safe:
            raise ForbiddenAddress(f"{host} resolves only to forbidden addresses")
        return safe

    async def close(self) -> None:
        await self._inner.close()


def make_session(*, allowed: Sequence[Network], limit: int, timeout: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=0, resolver=GuardedResolver(allowed), ttl_dns_cache=10, enable_cleanup_closed=True
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
    )


@dataclass(frozen=True, slots=True)
class Response:
    """The outcome of one POST: a status, or the kind of error that prevented one."""

    started_at: float  # unix time
    duration_ms: float
    status: int | None = None
    error_kind: str | None = None
    excerpt: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


async def _excerpt(resp: aiohttp.ClientResponse) -> str:
    """At most RESPONSE_EXCERPT bytes: a 10 MB answer is never read whole."""
    chunks: list[bytes] = []
    size = 0
    while size < RESPONSE_EXCERPT:
        chunk = await resp.content.read(RESPONSE_EXCERPT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


@functools.lru_cache(maxsize=4096)
def _literal_forbidden(url: str, allowed: tuple[Network, ...]) -> bool:
    """A URL naming a forbidden IP literal (host names are checked by the resolver on connect)."""
    literal = parse_ip(urllib.parse.urlsplit(url).hostname or "")
    return literal is not None and is_forbidden(literal, allowed)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], allowed: Sequence[Network]
) -> Response:
    started, t0 = time.time(), time.perf_counter()

    def done(**kw: Any) -> Response:
        return Response(started, (time.perf_counter() - t0) * 1000, **kw)

    if _literal_forbidden(url, tuple(allowed)):
        return done(error_kind="forbidden_address")
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
            excerpt = await _excerpt(resp)
            retry_after = _retry_after(resp.headers.get("Retry-After")) if resp.status in (429, 503) else None
            resp.close()  # never reuse a connection whose body we did not drain
            return done(status=resp.status, excerpt=excerpt, retry_after=retry_after)
    except TimeoutError:
        return done(error_kind="timeout")
    except aiohttp.ClientConnectorCertificateError:
        return done(error_kind="tls_error")
    except aiohttp.ClientSSLError:
        return done(error_kind="tls_error")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ForbiddenAddress) or isinstance(exc.__cause__, ForbiddenAddress):
            return done(error_kind="forbidden_address")
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return done(error_kind="dns_error")
        return done(error_kind="connection_error")
    except (aiohttp.ClientError, OSError):
        return done(error_kind="connection_error")
