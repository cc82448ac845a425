"""URL rules and the SSRF guard (dispatcher.delivery.outbound), without real outbound traffic."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace

import pytest

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
