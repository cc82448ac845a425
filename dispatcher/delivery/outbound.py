"""Outbound HTTP to receivers: URL rules, the SSRF guard (at registration and at connect time), and one POST.

A host is refused when any address it resolves to is loopback, private, link-local, CGNAT,
multicast, unspecified, reserved or documentation space, in IPv4 or IPv6 (IPv4-mapped, 6to4,
Teredo and NAT64 forms are unwrapped first), unless the address is in DISPATCHER_ALLOWED_NETWORKS.
The connect-time check runs on every new connection, on the addresses it will connect to, so DNS
rebinding after registration does not get through. Redirects are never followed.

Webhooks go through `WebhookClient` (a lean HTTP/1.1 client over http1.py: aiohttp's client was more than
half of the worker's time per webhook); the ownership checks and certificate fetches use an aiohttp session
(`make_session`, guarded by `GuardedResolver`). Both report the same `Response` and error kinds.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohappyeyeballs
import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from dispatcher import __version__
from dispatcher.delivery import http1
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


class Unresolvable(OSError):
    """The receiver's host name does not resolve."""


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
    session: aiohttp.ClientSession | WebhookClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    allowed: Sequence[Network],
) -> Response:
    """POST through either client; a WebhookClient applies the allowed networks it was made with."""
    if isinstance(session, WebhookClient):
        return await session.post(url, body, headers)
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


# --- the webhook client ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """What a request to one URL needs, parsed once per URL."""

    key: tuple[str, str, int]  # the pool's: scheme, host, port
    host: str  # IDNA-encoded; an IPv6 literal without brackets
    port: int
    tls: bool
    start: str  # the request line and the headers that depend only on the URL


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> _Target:
    u = yarl.URL(url)
    if u.scheme not in ("http", "https") or not u.raw_host or u.port is None:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = u.raw_host.rstrip(".")
    start = f"POST {u.raw_path_qs or '/'} HTTP/1.1\r\nHost: {u.host_port_subcomponent}\r\nAccept: */*\r\n"
    return _Target((u.scheme, host, u.port), host, u.port, u.scheme == "https", start)


_START_LINES = 3  # in _Target.start


def _request_head(target: _Target, body: bytes, headers: dict[str, str]) -> bytes:
    """The request's head as aiohttp would send it (Accept, a Content-Type for bytes, no Accept-Encoding).
    A CR or LF inside a header would start a header or a request of its own: refused, as aiohttp does."""
    lines = [target.start]
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    given = {name.lower() for name in headers}
    if "content-type" not in given:
        lines.append("Content-Type: application/octet-stream\r\n")
    if "user-agent" not in given:
        lines.append(f"User-Agent: {USER_AGENT}\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    head = "".join(lines)
    expected = _START_LINES + len(lines)  # the start's lines, one per header, and the blank line after the last
    if head.count("\n") != expected or head.count("\r") != expected:
        raise ValueError("a header name or value contains CR or LF")
    return head.encode()


class WebhookClient:
    """POSTs to receivers over pooled keep-alive HTTP/1.1 connections, with the SSRF guard on each new
    connection, TLS verified against the system's CAs with SNI, and one total timeout per request (waiting
    for a connection, connecting, sending, and reading the answer's head and excerpt)."""

    def __init__(
        self, *, allowed: Sequence[Network], limit: int, timeout: float, ssl_context: ssl.SSLContext | None = None
    ):
        self.allowed = tuple(allowed)
        self.timeout = timeout
        self.pool = http1.Pool(limit)
        self._ssl = ssl_context or _verified_context()
        self._dns: dict[tuple[str, int], tuple[float, list[Any]]] = {}  # host, port -> (expires, addrinfo)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        started, t0 = time.time(), time.perf_counter()

        def done(**kw: Any) -> Response:
            return Response(started, (time.perf_counter() - t0) * 1000, **kw)

        try:
            target = _target(url)
        except ValueError:
            return done(error_kind="connection_error")
        data = _request_head(target, body, headers) + body
        try:
            answer = await self._send(target, data)
        except TimeoutError:
            return done(error_kind="timeout")
        except ForbiddenAddress:
            return done(error_kind="forbidden_address")
        except Unresolvable:
            return done(error_kind="dns_error")
        except (ssl.SSLError, ssl.CertificateError):
            return done(error_kind="tls_error")
        except (http1.ProtocolError, OSError):
            return done(error_kind="connection_error")
        status = answer.status
        retry_after = _retry_after(answer.retry_after) if status in (429, 503) else None
        return done(status=status, excerpt=answer.body.decode("utf-8", "replace"), retry_after=retry_after)

    async def _send(self, target: _Target, data: bytes) -> http1.Answer:
        deadline = asyncio.get_running_loop().time() + self.timeout
        conn = await self._acquire(target, deadline)
        reusable = False
        try:
            answer = await conn.request(data, deadline)
            reusable = answer.reusable
            return answer
        finally:
            self.pool.release(target.key, conn, reusable)

    async def _acquire(self, target: _Target, deadline: float) -> http1.Connection:
        """A slot in the pool and a connection for `target`: an idle one, else a new one."""
        pool, loop = self.pool, asyncio.get_running_loop()
        if not pool.try_slot():
            async with asyncio.timeout_at(deadline):
                await pool.wait_slot()
        try:
            conn = pool.idle(target.key, loop.time())
            if conn is None:
                async with asyncio.timeout_at(deadline):
                    conn = await self._open(target)
                pool.used(conn)
            return conn
        except BaseException:
            pool.free_slot()
            raise

    async def _open(self, target: _Target) -> http1.Connection:
        """Connect to one of the addresses the guard let through (never to the name again: no rebinding)."""
        loop = asyncio.get_running_loop()
        sock = await aiohappyeyeballs.start_connection(await self._addresses(target), happy_eyeballs_delay=0.25)
        try:
            _, conn = await loop.create_connection(
                lambda: http1.Connection(loop, RESPONSE_EXCERPT),
                sock=sock,
                ssl=self._ssl if target.tls else None,
                server_hostname=target.host if target.tls else None,
            )
        except BaseException:
            sock.close()
            raise
        return conn

    async def _addresses(self, target: _Target) -> list[Any]:
        """getaddrinfo's answers (cached 10 s, as aiohttp did) minus forbidden addresses; at least one."""
        host, port = target.host, target.port
        literal = parse_ip(host)
        if literal is not None:
            if is_forbidden(literal, self.allowed):
                raise ForbiddenAddress(f"{host} is a forbidden address")
            family = socket.AF_INET if literal.version == 4 else socket.AF_INET6
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
        loop = asyncio.get_running_loop()
        expires, infos = self._dns.get((host, port), (0.0, []))
        if expires <= loop.time():
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)
            except (OSError, UnicodeError) as exc:
                raise Unresolvable(f"{host} does not resolve: {exc}") from exc
            if len(self._dns) >= 1024:
                self._dns.clear()
            self._dns[host, port] = (loop.time() + 10.0, infos)
        safe = [i for i in infos if not is_forbidden(ipaddress.ip_address(str(i[4][0]).split("%")[0]), self.allowed)]
        if not safe:
            raise ForbiddenAddress(f"{host} resolves only to forbidden addresses")
        return safe

    async def close(self) -> None:
        self.pool.close()


@functools.cache
def _verified_context() -> ssl.SSLContext:
    """The system's CAs, hostname checks on; made once (it reads the CA files)."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def make_client(*, allowed: Sequence[Network], limit: int, timeout: float) -> WebhookClient:
    """The webhook client: `limit` connections in use at most, `timeout` seconds per request in total."""
    return WebhookClient(allowed=allowed, limit=limit, timeout=timeout)
