"""URL rules, the SSRF guard, and the webhook client (dispatcher.delivery.outbound): the rules without traffic,
the client against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dispatcher.delivery import outbound
from dispatcher.delivery.outbound import (
    ForbiddenAddress,
    GuardedResolver,
    _retry_after,
    check_url,
    check_url_syntax,
    is_forbidden,
)
from dispatcher.errors import Forbidden, InvalidRequest

ip = ipaddress.ip_address
net = ipaddress.ip_network
LOCAL_ALLOWED = [net("127.0.0.0/8"), net("::1/128")]


def teredo(client_v4: str, server_v4: str = "65.54.227.120") -> str:
    """A Teredo address (2001::/32) for a client; the client address is stored inverted (RFC 4380)."""
    server = int(ip(server_v4))
    client = int(ip(client_v4)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | (0x8000 << 48) | (0x63BF << 32) | client))


def sixtofour(v4: str) -> str:
    return str(ipaddress.IPv6Address((0x2002 << 112) | (int(ip(v4)) << 80) | 1))


def nat64(v4: str) -> str:
    return str(ipaddress.IPv6Address(int(ip("64:ff9b::")) | int(ip(v4))))


# --- is_forbidden ---------------------------------------------------------------------------------

FORBIDDEN = [
    # loopback
    "127.0.0.1",
    "127.255.255.254",
    # RFC 1918
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.0.1",
    "192.168.255.255",
    # link-local, incl. the cloud metadata address
    "169.254.169.254",
    "169.254.0.1",
    # CGNAT 100.64/10
    "100.64.0.1",
    "100.127.255.254",
    # multicast
    "224.0.0.1",
    "239.255.255.250",
    # unspecified / "this network"
    "0.0.0.0",
    "0.1.2.3",
    # reserved 240/4, broadcast
    "240.0.0.1",
    "254.1.2.3",
    "255.255.255.255",
    # IETF protocol assignments, documentation, benchmarking
    "192.0.0.8",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.200",
    "198.18.0.1",
    "198.19.255.254",
    # IPv6 loopback, unspecified, link-local, ULA, multicast, site-local, documentation, discard
    "::1",
    "::",
    "fe80::1",
    "febf:ffff::1",
    "fc00::1",
    "fd12:3456:789a::1",
    "ff02::1",
    "ff0e::1",
    "fec0::1",
    "2001:db8::1",
    "100::1",
    # IPv4-mapped forms of forbidden IPv4
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:192.168.1.1",
    "::ffff:169.254.169.254",
    "::ffff:100.64.0.1",
    "::ffff:0.0.0.0",
    # 6to4 embedding forbidden IPv4
    sixtofour("127.0.0.1"),
    sixtofour("10.0.0.1"),
    sixtofour("169.254.169.254"),
    sixtofour("100.64.0.1"),
    sixtofour("192.168.1.1"),
    # NAT64 embedding forbidden IPv4
    nat64("127.0.0.1"),
    nat64("10.0.0.1"),
    nat64("169.254.169.254"),
    # Teredo (with forbidden and with public clients: the whole prefix is refused)
    teredo("127.0.0.1"),
    teredo("10.0.0.1"),
    teredo("169.254.169.254"),
    teredo("8.8.8.8"),
]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_addresses_in_forbidden_ranges_are_refused(address: str) -> None:
    assert is_forbidden(ip(address)) is True


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2001:4860:4860::8888", sixtofour("8.8.8.8")],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_forbidden(ip(address)) is False


def test_ipv4_mapped_public_address_is_allowed() -> None:
    assert is_forbidden(ip("::ffff:8.8.8.8")) is False


def test_nat64_form_of_a_public_address_is_allowed() -> None:
    assert is_forbidden(ip(nat64("8.8.8.8"))) is False


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "::ffff:127.0.0.1", sixtofour("127.0.0.1")])
def test_allowed_network_overrides_the_guard(address: str) -> None:
    assert is_forbidden(ip(address), [net("127.0.0.0/8")]) is False


@pytest.mark.parametrize("address", ["::1", "10.0.0.1", "169.254.169.254", "::ffff:10.0.0.1"])
def test_allowed_network_does_not_open_other_ranges(address: str) -> None:
    assert is_forbidden(ip(address), [net("127.0.0.0/8")]) is True


@pytest.mark.parametrize(
    ("address", "allowed"),
    [("::1", "::1/128"), ("fd00::5", "fd00::/8"), ("10.1.2.3", "10.0.0.0/8"), ("192.168.1.20", "192.168.1.0/24")],
)
def test_allowed_networks_of_either_family_apply(address: str, allowed: str) -> None:
    assert is_forbidden(ip(address), [net(allowed)]) is False


def test_ipv4_allowed_network_does_not_match_ipv6_candidates_by_integer_value() -> None:
    # ::a00:1 has the same low 32 bits as 10.0.0.1 but is a different family
    assert is_forbidden(ip("::a00:1"), [net("10.0.0.0/8")]) is True


# --- check_url_syntax ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allow_http"),
    [
        # not http(s)
        ("ftp://example.com/hook", True),
        ("file:///etc/passwd", True),
        ("javascript:alert(1)", True),
        ("gopher://example.com/", True),
        ("example.com/hook", True),
        ("", True),
        # credentials
        ("https://user:pass@example.com/hook", False),
        ("https://user@example.com/hook", False),
        ("https://:secret@example.com/hook", False),
        ("https://@example.com/hook", False),
        # no host
        ("https:///hook", False),
        ("https://", False),
        ("https://:443/hook", False),
        # over-long
        ("https://example.com/" + "a" * 2029, False),
        ("https://example.com/?q=" + "a" * 5000, False),
        # bad port
        ("https://example.com:99999/hook", False),
    ],
)
def test_check_url_syntax_rejects_with_field_url(url: str, allow_http: bool) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_url_syntax(url, allow_http=allow_http)
    assert info.value.field == "url"
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("url", "allow_http"),
    [
        ("https://example.com/hook", False),
        ("https://example.com:8443/hook?x=1#f", False),
        ("HTTPS://EXAMPLE.COM/hook", False),
        ("http://example.com/hook", True),
        ("https://[2606:4700:4700::1111]/hook", False),
        ("https://example.com/" + "a" * 2028, False),  # exactly 2048 characters
    ],
)
def test_check_url_syntax_accepts_valid_urls(url: str, allow_http: bool) -> None:
    parts = check_url_syntax(url, allow_http=allow_http)
    assert parts.hostname


def test_plain_http_where_https_is_required_is_refused_as_policy_not_syntax() -> None:
    with pytest.raises(Forbidden) as info:
        check_url_syntax("http://example.com/hook", allow_http=False)
    assert (info.value.status, info.value.code, info.value.field) == (403, "https_required", "url")


def test_over_long_url_limit_is_2048_characters() -> None:
    ok = "https://example.com/" + "a" * 2028
    assert len(ok) == 2048
    check_url_syntax(ok, allow_http=False)
    with pytest.raises(InvalidRequest):
        check_url_syntax(ok + "a", allow_http=False)


# --- check_url (async, resolves names) -------------------------------------------------------------


async def test_check_url_refuses_localhost_without_allowed_networks() -> None:
    with pytest.raises(Forbidden) as info:
        await check_url("https://localhost/hook", allow_http=False, allowed=[])
    assert info.value.field == "url"
    assert info.value.code == "forbidden_address"


async def test_check_url_accepts_localhost_with_loopback_allowed() -> None:
    await check_url("https://localhost:8443/hook", allow_http=False, allowed=LOCAL_ALLOWED)
    await check_url("http://localhost/hook", allow_http=True, allowed=LOCAL_ALLOWED)


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1/hook", "https://[::1]/hook", "https://169.254.169.254/", "https://[::ffff:10.0.0.1]/"]
)
async def test_check_url_refuses_forbidden_ip_literals(url: str) -> None:
    with pytest.raises(Forbidden) as info:
        await check_url(url, allow_http=False, allowed=[])
    assert info.value.code == "forbidden_address"


@pytest.mark.parametrize("url", ["https://8.8.8.8/hook", "https://[2606:4700:4700::1111]/hook"])
async def test_check_url_accepts_public_ip_literals_without_resolving(url: str) -> None:
    await check_url(url, allow_http=False, allowed=[])


async def test_check_url_applies_syntax_rules_first() -> None:
    with pytest.raises(InvalidRequest) as info:
        await check_url("ftp://localhost/hook", allow_http=False, allowed=LOCAL_ALLOWED)
    assert info.value.code == "invalid_request"
    with pytest.raises(Forbidden) as refused:
        await check_url("http://localhost/hook", allow_http=False, allowed=LOCAL_ALLOWED)
    assert refused.value.code == "https_required"


# --- GuardedResolver -------------------------------------------------------------------------------


async def test_guarded_resolver_refuses_localhost_without_allowed_networks() -> None:
    resolver = GuardedResolver([])
    try:
        with pytest.raises(ForbiddenAddress):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


async def test_guarded_resolver_returns_localhost_with_loopback_allowed() -> None:
    resolver = GuardedResolver(LOCAL_ALLOWED)
    try:
        results = await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    assert results
    for r in results:
        assert r["port"] == 80
        assert ip(r["host"].split("%")[0]).is_loopback


def test_forbidden_address_is_an_os_error() -> None:
    # aiohttp wraps resolver OSErrors in ClientConnectorError, which post() maps to forbidden_address
    assert issubclass(ForbiddenAddress, OSError)


# --- _retry_after ----------------------------------------------------------------------------------

FIXED_NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def frozen_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbound, "time", SimpleNamespace(time=FIXED_NOW.timestamp))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), ("0", 0.0), ("1.5", 1.5), (" 30 ", 30.0), ("-5", 0.0), ("3600", 3600.0)],
)
def test_retry_after_parses_delta_seconds(value: str, expected: float) -> None:
    assert _retry_after(value) == expected


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(timedelta(seconds=90), 90.0), (timedelta(hours=2), 7200.0), (timedelta(0), 0.0), (-timedelta(hours=1), 0.0)],
)
def test_retry_after_parses_http_dates_relative_to_now(frozen_time: None, offset: timedelta, expected: float) -> None:
    value = format_datetime(FIXED_NOW + offset, usegmt=True)
    assert _retry_after(value) == expected


def test_retry_after_parses_a_fixed_http_date(frozen_time: None) -> None:
    assert _retry_after("Sat, 01 Mar 2025 12:05:00 GMT") == 300.0


@pytest.mark.parametrize("value", [None, "", "soon", "tomorrow at noon", "12 minutes", "Mon, 99 Foo 2025", "0x10"])
def test_retry_after_ignores_garbage(value: str | None) -> None:
    assert _retry_after(value) is None


# --- WebhookClient: real sockets to real servers on 127.0.0.1 --------------------------------------

HEADERS = {"content-type": "application/json", "user-agent": outbound.USER_AGENT, "webhook-id": "msg_1"}


@dataclass
class Seen:
    """What an aiohttp receiver saw: each request, and the client ports it came from (one per connection)."""

    requests: list[tuple[str, str, Mapping[str, str], bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


@contextlib.asynccontextmanager
async def receiver(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, Seen]]:
    """An aiohttp server answering every POST with `handler`; yields its base URL and what it saw."""
    seen = Seen()

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.requests.append((request.method, request.path_qs, request.headers.copy(), await request.read()))
        seen.ports.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        seen.in_flight += 1
        seen.max_in_flight = max(seen.max_in_flight, seen.in_flight)
        try:
            return await handler(request)
        finally:
            seen.in_flight -= 1

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_receiver(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A raw TCP server for answers aiohttp would not send: reads a request's head, then runs `answer`."""
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            await answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def client(
    timeout: float = 5.0, limit: int = 10, allowed: Sequence[outbound.Network] = LOCAL_ALLOWED, **kw: Any
) -> AsyncIterator[outbound.WebhookClient]:
    c = outbound.WebhookClient(allowed=allowed, limit=limit, timeout=timeout, **kw)
    try:
        yield c
    finally:
        await c.close()
        await asyncio.sleep(0)  # let the aborted transports close on this loop


def answer(status: int = 200, body: bytes = b"ok", headers: dict[str, str] | None = None) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)

    return handler


async def test_client_posts_the_body_and_headers_and_returns_the_answer() -> None:
    async with receiver(answer(201, b"created")) as (base, seen), client() as c:
        response = await c.post(base + "/hook?a=1&b=%20x", b'{"n":1}', HEADERS)
    assert (response.status, response.excerpt, response.error_kind, response.retry_after) == (
        201,
        "created",
        None,
        None,
    )
    assert response.ok and response.duration_ms > 0
    [(method, path, headers, body)] = seen.requests
    assert (method, path, body) == ("POST", "/hook?a=1&b=%20x", b'{"n":1}')
    assert headers["Host"] == base.removeprefix("http://")
    assert headers["Content-Length"] == "7"
    assert headers["content-type"] == "application/json" and headers["webhook-id"] == "msg_1"
    assert headers["user-agent"] == outbound.USER_AGENT
    assert "Accept-Encoding" not in headers


async def test_keep_alive_connections_are_reused_one_request_at_a_time() -> None:
    async with receiver(answer()) as (base, seen), client() as c:
        for _ in range(5):
            assert (await c.post(base + "/hook", b"{}", HEADERS)).status == 200
    assert len(set(seen.ports)) == 1


async def test_connections_in_use_stay_within_the_limit() -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        return web.Response(text="ok")

    async with receiver(slow) as (base, seen), client(limit=3) as c:
        responses = await asyncio.gather(*(c.post(base + "/hook", b"{}", HEADERS) for _ in range(12)))
    assert [r.status for r in responses] == [200] * 12
    assert seen.max_in_flight == 3
    assert len(set(seen.ports)) == 3


async def test_a_request_waiting_for_a_free_connection_times_out_within_its_total_time() -> None:
    async def slow_but_fast(request: web.Request) -> web.StreamResponse:
        if request.path == "/hook":
            await asyncio.sleep(0.5)
        return web.Response(text="ok")

    async with receiver(slow_but_fast) as (base, _), client(limit=1, timeout=0.3) as c:
        first, second = await asyncio.gather(*(c.post(base + "/hook", b"{}", HEADERS) for _ in range(2)))
        assert (first.error_kind, second.error_kind) == ("timeout", "timeout")
        # Both gave their slot back: with a limit of one, the next request gets a connection and its answer.
        assert (await c.post(base + "/fast", b"{}", HEADERS)).status == 200


async def test_chunked_answer_is_read_whole_and_the_connection_reused() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=202)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"one ", b"two ", b"three"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async with receiver(chunked) as (base, seen), client() as c:
        first = await c.post(base + "/hook", b"{}", HEADERS)
        second = await c.post(base + "/hook", b"{}", HEADERS)
    assert (first.status, first.excerpt) == (202, "one two three")
    assert second.excerpt == "one two three"
    assert len(set(seen.ports)) == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
async def test_ten_megabyte_answer_keeps_only_an_excerpt_and_drops_the_connection(chunked: bool) -> None:
    pattern = b"0123456789abcdef" * 4096

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = 160 * len(pattern)
        await resp.prepare(request)
        for _ in range(160):
            await resp.write(pattern)
        return resp

    async with receiver(huge) as (base, seen), client() as c:
        first = await c.post(base + "/hook", b"{}", HEADERS)
        second = await c.post(base + "/hook", b"{}", HEADERS)
    assert first.status == second.status == 200
    assert first.excerpt == pattern[: outbound.RESPONSE_EXCERPT].decode()
    assert len(set(seen.ports)) == 2  # a body not read to its end leaves its connection unusable


async def test_retry_after_is_read_for_429_and_503_only() -> None:
    async with client() as c:
        for status, expected in [(429, 30.0), (503, 30.0), (200, None), (500, None)]:
            async with receiver(answer(status, b"", {"Retry-After": "30"})) as (base, _):
                response = await c.post(base + "/hook", b"{}", HEADERS)
            assert (response.status, response.retry_after) == (status, expected)


async def test_redirects_are_returned_not_followed() -> None:
    async with receiver(answer(302, b"", {"Location": "http://169.254.169.254/"})) as (base, seen), client() as c:
        response = await c.post(base + "/hook", b"{}", HEADERS)
    assert response.status == 302 and not response.ok
    assert len(seen.requests) == 1


async def test_connection_close_answer_is_not_reused() -> None:
    async with receiver(answer(200, b"ok", {"Connection": "close"})) as (base, seen), client() as c:
        for _ in range(2):
            assert (await c.post(base + "/hook", b"{}", HEADERS)).status == 200
    assert len(set(seen.ports)) == 2


async def test_idle_connections_are_closed_after_the_keep_alive_time() -> None:
    async with receiver(answer()) as (base, seen), client() as c:
        c.pool.keepalive = 0.05
        await c.post(base + "/hook", b"{}", HEADERS)
        await asyncio.sleep(0.15)
        await c.post(base + "/hook", b"{}", HEADERS)
    assert len(set(seen.ports)) == 2  # the idle connection was closed: the second request opened another


# Answers only a raw socket sends.


async def test_receiver_that_never_answers_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with raw_receiver(silent) as url, client(timeout=0.3) as c:
        t0 = time.monotonic()
        response = await c.post(url, b"{}", HEADERS)
    assert response.error_kind == "timeout" and response.status is None
    assert 0.25 < time.monotonic() - t0 < 2


async def test_receiver_dripping_its_answer_times_out_within_the_total_time() -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    async with raw_receiver(drip) as url, client(timeout=0.5) as c:
        t0 = time.monotonic()
        response = await c.post(url, b"{}", HEADERS)
    assert response.error_kind == "timeout"
    assert time.monotonic() - t0 < 1.5


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 100_000,  # headers without end
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..",  # then the connection ends
        b"",  # the connection ends without a byte
    ],
    ids=["not-http", "bad-status", "bad-length", "endless-headers", "truncated-body", "nothing"],
)
async def test_garbage_or_truncated_answers_are_connection_errors(garbage: bytes) -> None:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(garbage)
        await writer.drain()

    async with raw_receiver(send) as url, client(timeout=2) as c:
        response = await c.post(url, b"{}", HEADERS)
    assert (response.error_kind, response.status) == ("connection_error", None)


async def test_answer_delimited_by_the_end_of_the_connection_is_read() -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nthanks")
        await writer.drain()

    async with raw_receiver(http10) as url, client() as c:
        response = await c.post(url, b"{}", HEADERS)
    assert (response.status, response.excerpt) == (200, "thanks")


async def test_interim_100_continue_is_skipped() -> None:
    async def interim(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with raw_receiver(interim) as url, client() as c:
        response = await c.post(url, b"{}", HEADERS)
    assert response.status == 204


async def test_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the request: nothing listens there
    async with client() as c:
        response = await c.post(f"http://127.0.0.1:{port}/hook", b"{}", HEADERS)
    assert response.error_kind == "connection_error"


@pytest.mark.parametrize("header", [{"x-a": "1\r\nX-Injected: 1"}, {"x-a\r\nX-Injected": "1"}, {"x-a": "1\n"}])
async def test_header_with_cr_or_lf_is_refused_before_connecting(header: dict[str, str]) -> None:
    async with client() as c:
        with pytest.raises(ValueError, match="CR or LF"):
            await c.post("http://127.0.0.1:9/hook", b"{}", HEADERS | header)


# The SSRF guard on every new connection.


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/hook", "http://[::ffff:127.0.0.1]:{port}/hook"])
async def test_forbidden_ip_literal_is_refused_without_connecting(url: str) -> None:
    async with receiver(answer()) as (base, seen), client(allowed=[]) as c:
        response = await c.post(url.format(port=base.rsplit(":", 1)[1]), b"{}", HEADERS)
    assert response.error_kind == "forbidden_address"
    assert seen.requests == []


async def test_host_resolving_to_a_forbidden_address_at_connect_time_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name passed registration, and now resolves to loopback."""
    async with receiver(answer()) as (base, seen), client(allowed=[]) as c:
        port = int(base.rsplit(":", 1)[1])
        rebind(monkeypatch, {"hooks.example.com": ["127.0.0.1"]})
        response = await c.post(f"http://hooks.example.com:{port}/hook", b"{}", HEADERS)
    assert response.error_kind == "forbidden_address"
    assert seen.requests == []


async def test_only_the_allowed_addresses_a_name_resolves_to_are_connected_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection goes to an address the guard checked, never to the name resolved again."""
    async with receiver(answer()) as (base, seen), client(allowed=[net("127.0.0.1/32")]) as c:
        port = int(base.rsplit(":", 1)[1])
        rebind(monkeypatch, {"hooks.example.com": ["10.0.0.1", "127.0.0.1"]})
        response = await c.post(f"http://hooks.example.com:{port}/hook", b"{}", HEADERS)
    assert response.status == 200
    assert seen.requests[0][2]["Host"] == f"hooks.example.com:{port}"


async def test_localhost_without_allowed_networks_is_refused() -> None:
    async with client(allowed=[]) as c:
        response = await c.post("http://localhost:9/hook", b"{}", HEADERS)
    assert response.error_kind == "forbidden_address"


async def test_name_that_does_not_resolve_is_a_dns_error() -> None:
    async with client() as c:
        response = await c.post("http://no-such-host.invalid/hook", b"{}", HEADERS)
    assert response.error_kind == "dns_error"


def rebind(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> None:
    """Make the running loop resolve `names` to the given addresses (a DNS server under an attacker's control)."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in names[host]]
        return await real(host, port, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


# TLS: verified against the CAs the client trusts, with SNI.


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts the server's self-signed certificate
    names: list[str | None]  # the SNI names the server was offered


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.example.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.example.com")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    names: list[str | None] = []
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    server.sni_callback = lambda _sock, server_name, _ctx: names.append(server_name)  # type: ignore[func-returns-value]
    return Tls(server=server, client=ssl.create_default_context(cafile=str(cert_file)), names=names)


async def test_tls_with_a_trusted_certificate_sends_sni_and_succeeds(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    tls.names.clear()
    async with receiver(answer(200, b"secure"), tls.server) as (base, seen), client(ssl_context=tls.client) as c:
        port = int(base.rsplit(":", 1)[1])
        rebind(monkeypatch, {"hooks.example.com": ["127.0.0.1"]})
        first = await c.post(f"https://hooks.example.com:{port}/hook", b"{}", HEADERS)
        second = await c.post(f"https://hooks.example.com:{port}/hook", b"{}", HEADERS)
    assert (first.status, first.excerpt, second.status) == (200, "secure", 200)
    assert tls.names == ["hooks.example.com"]  # one handshake: the connection was reused
    assert len(set(seen.ports)) == 1


async def test_tls_certificate_not_trusted_is_a_tls_error(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    async with receiver(answer(), tls.server) as (base, seen), client() as c:  # the system's CAs
        port = int(base.rsplit(":", 1)[1])
        rebind(monkeypatch, {"hooks.example.com": ["127.0.0.1"]})
        response = await c.post(f"https://hooks.example.com:{port}/hook", b"{}", HEADERS)
    assert response.error_kind == "tls_error"
    assert seen.requests == []


async def test_tls_certificate_for_another_name_is_a_tls_error(tls: Tls) -> None:
    async with receiver(answer(), tls.server) as (base, seen), client(ssl_context=tls.client) as c:
        response = await c.post(base + "/hook", b"{}", HEADERS)  # https://127.0.0.1: not the certificate's name
    assert response.error_kind == "tls_error"
    assert seen.requests == []


async def test_plain_http_to_a_tls_receiver_is_a_connection_error(tls: Tls) -> None:
    async with receiver(answer(), tls.server) as (base, _), client() as c:
        response = await c.post(base.replace("https:", "http:") + "/hook", b"{}", HEADERS)
    assert response.error_kind == "connection_error"
