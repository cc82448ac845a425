"""Mail URL parsing and result helpers (the SMTP conversation is in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.sending.transport import (
    MaildirTransport,
    Outcome,
    RecipientResult,
    SendResult,
    SmtpTransport,
    transport_from_settings,
)


@pytest.mark.parametrize(
    ("url", "port", "use_tls", "start_tls"),
    [
        ("smtp://relay.example.com", 25, False, None),
        ("smtp+starttls://relay.example.com", 587, False, True),
        ("smtps://relay.example.com", 465, True, False),
        ("smtp://relay.example.com:2525", 2525, False, None),
    ],
)
def test_mail_url_scheme_selects_port_and_tls_mode(url: str, port: int, use_tls: bool, start_tls: bool | None) -> None:
    transport = SmtpTransport.from_url(url)
    assert (transport.hostname, transport.port) == ("relay.example.com", port)
    assert (transport.use_tls, transport.start_tls) == (use_tls, start_tls)
    assert transport.username is None and transport.password is None


def test_mail_url_credentials_are_percent_decoded() -> None:
    transport = SmtpTransport.from_url("smtp://user%40example.com:p%3Aw%2Frd%25@relay.example.com")
    assert (transport.username, transport.password) == ("user@example.com", "p:w/rd%")


def test_mail_url_timeout_is_read_from_the_query() -> None:
    assert SmtpTransport.from_url("smtp://relay.example.com?timeout=2.5").timeout == 2.5
    assert SmtpTransport.from_url("smtp://relay.example.com").timeout == 30.0


@pytest.mark.parametrize(
    "url",
    [
        "http://relay.example.com",
        "smtp://",
        "smtp://relay.example.com?timeout=soon",
        "smtp://relay.example.com?timeout=0",
        "smtp://relay.example.com?tiemout=5",
    ],
)
def test_invalid_mail_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        SmtpTransport.from_url(url)


def test_transport_repr_never_shows_the_password() -> None:
    assert "hunter2" not in repr(SmtpTransport.from_url("smtp://me:hunter2@relay.example.com"))


def test_maildir_is_used_when_no_mail_url_is_set(tmp_path: Path) -> None:
    for url in (None, ""):
        transport = transport_from_settings(url, tmp_path)
        assert isinstance(transport, MaildirTransport)
        assert transport.path == tmp_path / "mail"


def test_send_result_groups_recipients_by_outcome() -> None:
    result = SendResult(
        (
            RecipientResult("a@example.com", Outcome.ACCEPTED, 250, "ok"),
            RecipientResult("b@example.com", Outcome.BOUNCED, 550, "no such user"),
            RecipientResult("c@example.com", Outcome.DEFERRED, 451, "later"),
        )
    )
    assert [r.recipient for r in result.accepted] == ["a@example.com"]
    assert [r.recipient for r in result.bounced] == ["b@example.com"]
    assert [r.recipient for r in result.deferred] == ["c@example.com"]
