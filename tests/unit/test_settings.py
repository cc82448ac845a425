"""Settings defaults and parsing of the comma-separated list variables (dispatcher.settings)."""

from __future__ import annotations

import ipaddress
import os

import pytest
from pydantic import ValidationError

from dispatcher.settings import Settings

net = ipaddress.ip_network


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DISPATCHER_* variable from the surrounding environment leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("DISPATCHER_"):
            monkeypatch.delenv(name)


# --- defaults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("retry_schedule", [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]),
        ("webhook_timeout", 10.0),
        ("callback_concurrency", 10),
        ("max_body_bytes", 1024 * 1024),
        ("rate_limit_per_second", 100.0),
        ("disable_after", 5 * 24 * 3600.0),
        ("secret_rotation_grace", 24 * 3600.0),
        ("allowed_networks", []),
        ("allow_http_callbacks", False),
        ("retry_jitter", 0.2),
        ("retry_after_max", 3600.0),
    ],
)
def test_defaults_match_the_documented_values(name: str, expected: object) -> None:
    assert getattr(Settings(), name) == expected


def test_default_retry_schedule_is_not_shared_between_instances() -> None:
    first = Settings()
    first.retry_schedule.append(1.0)
    assert Settings().retry_schedule == [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


# --- DISPATCHER_ALLOWED_NETWORKS ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.0/8", [net("127.0.0.0/8")]),
        ("127.0.0.0/8,::1/128", [net("127.0.0.0/8"), net("::1/128")]),
        (" 10.0.0.0/8 , fd00::/8 ", [net("10.0.0.0/8"), net("fd00::/8")]),
        ("10.0.0.0/8;192.168.0.0/16", [net("10.0.0.0/8"), net("192.168.0.0/16")]),
        ("10.0.0.0/8,,", [net("10.0.0.0/8")]),
        ("127.0.0.1", [net("127.0.0.1/32")]),  # a bare address is a single-host network
        ("::1", [net("::1/128")]),
        ("", []),
    ],
)
def test_allowed_networks_parse_from_a_comma_separated_string(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list
) -> None:
    monkeypatch.setenv("DISPATCHER_ALLOWED_NETWORKS", value)
    assert Settings().allowed_networks == expected


def test_allowed_networks_have_network_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_ALLOWED_NETWORKS", "10.0.0.0/8,fd00::/8")
    v4, v6 = Settings().allowed_networks
    assert isinstance(v4, ipaddress.IPv4Network)
    assert isinstance(v6, ipaddress.IPv6Network)


@pytest.mark.parametrize("value", ["not-a-network", "10.0.0.0/33", "300.1.2.3/8", "10.0.0.0/8,nope"])
def test_invalid_allowed_networks_are_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DISPATCHER_ALLOWED_NETWORKS", value)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(("value", "expected"), [("10.1.2.3/8", net("10.0.0.0/8")), ("fd00::1/8", net("fd00::/8"))])
def test_allowed_network_with_host_bits_set_is_normalised(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> None:
    monkeypatch.setenv("DISPATCHER_ALLOWED_NETWORKS", value)
    assert Settings().allowed_networks == [expected]


# --- DISPATCHER_RETRY_SCHEDULE ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", [5.0]),
        ("1,2,3", [1.0, 2.0, 3.0]),
        (" 1 , 2.5 ,60 ", [1.0, 2.5, 60.0]),
        ("10;20", [10.0, 20.0]),
        ("0.5,", [0.5]),
    ],
)
def test_retry_schedule_parses_from_a_comma_separated_string(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[float]
) -> None:
    monkeypatch.setenv("DISPATCHER_RETRY_SCHEDULE", value)
    assert Settings().retry_schedule == expected


@pytest.mark.parametrize("value", ["soon", "1,two,3", "[1, 2]"])
def test_invalid_retry_schedule_is_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DISPATCHER_RETRY_SCHEDULE", value)
    with pytest.raises(ValidationError):
        Settings()


def test_scalar_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_WEBHOOK_TIMEOUT", "2.5")
    monkeypatch.setenv("DISPATCHER_CALLBACK_CONCURRENCY", "3")
    monkeypatch.setenv("DISPATCHER_ALLOW_HTTP_CALLBACKS", "true")
    s = Settings()
    assert (s.webhook_timeout, s.callback_concurrency, s.allow_http_callbacks) == (2.5, 3, True)


# --- tracking links -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http://127.0.0.1:8080"),
        ({"DISPATCHER_PORT": "9090"}, "http://127.0.0.1:9090"),
        ({"DISPATCHER_HOST": "0.0.0.0", "DISPATCHER_PORT": "9090"}, "http://127.0.0.1:9090"),
        ({"DISPATCHER_HOST": "::", "DISPATCHER_PORT": "9090"}, "http://[::1]:9090"),
        ({"DISPATCHER_HOST": "mail.internal"}, "http://mail.internal:8080"),
        ({"DISPATCHER_PORT": "9090", "DISPATCHER_PUBLIC_URL": "https://t.example.com"}, "https://t.example.com"),
    ],
)
def test_tracking_links_follow_the_served_address_unless_a_public_url_is_set(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().tracking_base_url == expected


def test_tracking_links_follow_a_port_given_on_the_command_line():
    """`serve --port` copies the settings with a new port; the links must follow that port too."""
    assert Settings().model_copy(update={"port": 9191}).tracking_base_url == "http://127.0.0.1:9191"
