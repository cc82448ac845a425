"""Mail transports against a real SMTP server (aiosmtpd) and a real directory.

The server's answers can be switched per test, the way a real relay accepts some
recipients, refuses others for good and asks for others to be retried later.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dispatcher.sending.mime import OutgoingMail, build_message
from dispatcher.sending.transport import (
    MaildirTransport,
    Outcome,
    RecipientResult,
    SmtpTransport,
    transport_from_settings,
)

HOST = "127.0.0.1"
UNSUBSCRIBE = "https://mail.example.com/t/u/TOKEN"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SwitchableHandler:
    """An SMTP server whose answers the test decides."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    mail_reply: str | None = None
    data_reply: str | None = None
    received: list[Received] = field(default_factory=list)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok: queued as ABC123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def handler() -> SwitchableHandler:
    return SwitchableHandler()


@pytest.fixture
def smtp_server(handler: SwitchableHandler) -> Iterator[Controller]:
    controller = Controller(handler, hostname=HOST, port=free_port())
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def transport(smtp_server: Controller) -> SmtpTransport:
    return SmtpTransport.from_url(f"smtp://{HOST}:{smtp_server.port}?timeout=5")


def mail(**overrides: Any) -> OutgoingMail:
    fields: dict[str, Any] = {
        "from_": "Shop <shop@example.com>",
        "to": "ada@example.com",
        "bcc": ["audit@example.com"],
        "subject": "Your receipt",
        "html": "<p>Thanks!</p>",
        "text": "Thanks!",
        "attachments": {"receipt.pdf": b"%PDF-1.7 fake"},
        "message_key": "order-42",
        "unsubscribe_url": UNSUBSCRIBE,
    }
    fields.update(overrides)
    return build_message(**fields)


def outcomes(results: tuple[RecipientResult, ...]) -> dict[str, tuple[Outcome, int | None]]:
    return {r.recipient: (r.outcome, r.smtp_code) for r in results}


# --- SMTP ----------------------------------------------------------------------------------


async def test_accepted_message_arrives_with_content_and_headers(
    transport: SmtpTransport, handler: SwitchableHandler
) -> None:
    result = await transport.send(mail())

    assert outcomes(result.results) == {
        "ada@example.com": (Outcome.ACCEPTED, 250),
        "audit@example.com": (Outcome.ACCEPTED, 250),
    }
    assert result.server_response is not None and "queued as ABC123" in result.server_response
    [received] = handler.received
    assert received.mail_from == "shop@example.com"
    assert received.rcpt_tos == ["ada@example.com", "audit@example.com"]
    msg = received.message()
    assert msg["Subject"] == "Your receipt"
    assert msg["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "receipt.pdf"
    assert attachment.get_payload(decode=True) == b"%PDF-1.7 fake"


async def test_bcc_recipient_is_only_in_the_envelope(transport: SmtpTransport, handler: SwitchableHandler) -> None:
    await transport.send(mail())

    [received] = handler.received
    assert "audit@example.com" in received.rcpt_tos
    assert b"audit@example.com" not in received.content
    assert received.message()["Bcc"] is None


async def test_recipient_rejected_with_550_bounces_while_others_are_delivered(
    transport: SmtpTransport, handler: SwitchableHandler
) -> None:
    handler.rcpt_replies["audit@example.com"] = "550 5.1.1 No such user"

    result = await transport.send(mail())

    assert outcomes(result.results) == {
        "ada@example.com": (Outcome.ACCEPTED, 250),
        "audit@example.com": (Outcome.BOUNCED, 550),
    }
    [bounce] = result.bounced
    assert bounce.reason == "5.1.1 No such user"
    [received] = handler.received
    assert received.rcpt_tos == ["ada@example.com"]


async def test_every_recipient_rejected_means_no_data_is_sent(
    transport: SmtpTransport, handler: SwitchableHandler
) -> None:
    handler.rcpt_replies["ada@example.com"] = "550 5.1.1 No such user"
    handler.rcpt_replies["audit@example.com"] = "553 5.1.3 Bad address"

    result = await transport.send(mail())

    assert outcomes(result.results) == {
        "ada@example.com": (Outcome.BOUNCED, 550),
        "audit@example.com": (Outcome.BOUNCED, 553),
    }
    assert handler.received == []


async def test_recipient_answered_451_is_deferred(transport: SmtpTransport, handler: SwitchableHandler) -> None:
    handler.rcpt_replies["ada@example.com"] = "451 4.7.1 Greylisted, try again later"

    result = await transport.send(mail())

    assert outcomes(result.results) == {
        "ada@example.com": (Outcome.DEFERRED, 451),
        "audit@example.com": (Outcome.ACCEPTED, 250),
    }
    assert result.deferred[0].reason == "4.7.1 Greylisted, try again later"


async def test_data_answered_451_defers_every_recipient(transport: SmtpTransport, handler: SwitchableHandler) -> None:
    handler.data_reply = "451 4.3.0 Temporary failure"

    result = await transport.send(mail())

    assert {r.outcome for r in result.results} == {Outcome.DEFERRED}
    assert {r.smtp_code for r in result.results} == {451}


async def test_data_rejected_with_554_bounces_the_accepted_recipients(
    transport: SmtpTransport, handler: SwitchableHandler
) -> None:
    handler.rcpt_replies["audit@example.com"] = "451 4.2.2 Mailbox full"
    handler.data_reply = "554 5.7.1 Message refused as spam"

    result = await transport.send(mail())

    assert outcomes(result.results) == {
        "ada@example.com": (Outcome.BOUNCED, 554),
        "audit@example.com": (Outcome.DEFERRED, 451),
    }


async def test_sender_rejected_with_550_bounces_every_recipient(
    transport: SmtpTransport, handler: SwitchableHandler
) -> None:
    handler.mail_reply = "550 5.7.1 Sender not allowed"

    result = await transport.send(mail())

    assert {r.outcome for r in result.results} == {Outcome.BOUNCED}
    assert handler.received == []


async def test_transport_can_be_reused_after_a_rejection(transport: SmtpTransport, handler: SwitchableHandler) -> None:
    handler.data_reply = "451 4.3.0 Temporary failure"
    await transport.send(mail())
    handler.data_reply = None

    result = await transport.send(mail())

    assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}
    await transport.aclose()


@dataclass
class SlowHandler(SwitchableHandler):
    """Takes a while over each message and remembers how many sessions it served at once."""

    open: int = 0
    most_open: int = 0

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.05)
        self.open -= 1
        return await super().handle_DATA(server, session, envelope)


async def test_the_smtp_transport_keeps_at_most_its_concurrency_of_connections_to_the_relay() -> None:
    handler = SlowHandler()
    controller = Controller(handler, hostname=HOST, port=free_port())
    controller.start()
    try:
        transport = SmtpTransport.from_url(f"smtp://{HOST}:{controller.port}?timeout=5", concurrency=3)
        results = await asyncio.gather(*(transport.send(mail()) for _ in range(10)))
    finally:
        controller.stop()
    assert [r.results[0].outcome for r in results] == [Outcome.ACCEPTED] * 10
    assert len(handler.received) == 10 and handler.most_open == 3


async def test_connection_refused_defers_every_recipient() -> None:
    transport = SmtpTransport.from_url(f"smtp://{HOST}:{free_port()}?timeout=2")

    result = await transport.send(mail())

    assert outcomes(result.results) == {
        "ada@example.com": (Outcome.DEFERRED, None),
        "audit@example.com": (Outcome.DEFERRED, None),
    }
    assert all(r.reason for r in result.results)


async def test_silent_server_times_out_and_defers_every_recipient() -> None:
    """A relay that accepts TCP but never greets must not hang the worker."""

    connections: list[asyncio.StreamWriter] = []

    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()

    server = await asyncio.start_server(never_greet, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = SmtpTransport.from_url(f"smtp://{HOST}:{port}?timeout=0.3")
        result = await asyncio.wait_for(transport.send(mail()), timeout=5)
    finally:
        for writer in connections:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

    assert {r.outcome for r in result.results} == {Outcome.DEFERRED}


# --- TLS and authentication -------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return Certificate(server=server, client=client)


USERNAME = "relay user@example.com"
PASSWORD = "p@ss:w/rd%?#"


def check_credentials(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USERNAME.encode()
        and auth_data.password == PASSWORD.encode()
    )
    # handled=False: let the server answer 535 itself on failure.
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def starttls_server(handler: SwitchableHandler, certificate: Certificate) -> Iterator[Controller]:
    controller = Controller(
        handler,
        hostname=HOST,
        port=free_port(),
        tls_context=certificate.server,
        require_starttls=True,
        authenticator=check_credentials,
        auth_required=True,
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


async def test_required_starttls_with_url_encoded_credentials_delivers(
    starttls_server: Controller, handler: SwitchableHandler, certificate: Certificate
) -> None:
    url = f"smtp+starttls://{quote(USERNAME, safe='')}:{quote(PASSWORD, safe='')}@{HOST}:{starttls_server.port}"
    transport = SmtpTransport.from_url(url, tls_context=certificate.client)

    result = await transport.send(mail())

    assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}
    assert len(handler.received) == 1


async def test_plain_smtp_upgrades_to_starttls_when_offered(
    starttls_server: Controller, handler: SwitchableHandler, certificate: Certificate
) -> None:
    """The server requires TLS, so delivery proves the opportunistic upgrade happened."""
    url = f"smtp://{quote(USERNAME, safe='')}:{quote(PASSWORD, safe='')}@{HOST}:{starttls_server.port}"
    transport = SmtpTransport.from_url(url, tls_context=certificate.client)

    result = await transport.send(mail())

    assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}


async def test_wrong_password_defers_instead_of_bouncing(
    starttls_server: Controller, handler: SwitchableHandler, certificate: Certificate
) -> None:
    """Bad credentials are our configuration problem, not the recipient's."""
    url = f"smtp+starttls://{quote(USERNAME, safe='')}:wrong@{HOST}:{starttls_server.port}"
    transport = SmtpTransport.from_url(url, tls_context=certificate.client)

    result = await transport.send(mail())

    assert {r.outcome for r in result.results} == {Outcome.DEFERRED}
    assert {r.smtp_code for r in result.results} == {535}
    assert handler.received == []


async def test_required_starttls_against_a_server_without_it_defers(smtp_server: Controller) -> None:
    transport = SmtpTransport.from_url(f"smtp+starttls://{HOST}:{smtp_server.port}?timeout=5")

    result = await transport.send(mail())

    assert {r.outcome for r in result.results} == {Outcome.DEFERRED}


async def test_smtps_uses_implicit_tls(handler: SwitchableHandler, certificate: Certificate) -> None:
    controller = Controller(handler, hostname=HOST, port=free_port(), ssl_context=certificate.server)
    controller.start()
    try:
        transport = SmtpTransport.from_url(f"smtps://{HOST}:{controller.port}", tls_context=certificate.client)
        result = await transport.send(mail())
    finally:
        controller.stop()

    assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}
    assert len(handler.received) == 1


# --- maildir -------------------------------------------------------------------------------


async def test_maildir_transport_writes_a_parseable_eml(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "mail")
    outgoing = mail()

    result = await transport.send(outgoing)

    assert {r.outcome for r in result.results} == {Outcome.ACCEPTED}
    [path] = (tmp_path / "mail").iterdir()
    assert path.suffix == ".eml"
    assert path.name == result.server_response
    assert outgoing.message_id.strip("<>").split("@")[0] in path.name
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert parsed["Message-ID"] == outgoing.message_id
    assert parsed["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert [a.get_filename() for a in parsed.iter_attachments()] == ["receipt.pdf"]
    await transport.aclose()


async def test_maildir_file_names_sort_by_time_and_leave_no_temporary_files(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path)
    first, second = mail(), mail()

    await transport.send(first)
    await transport.send(second)

    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and all(name.endswith(".eml") for name in names)
    assert first.message_id.strip("<>").split("@")[0] in names[0]


async def test_maildir_writes_concurrent_sends_together_and_every_sender_gets_its_own_file(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path)
    outgoing = [mail() for _ in range(30)]

    results = await asyncio.gather(*(transport.send(m) for m in outgoing))

    assert sorted(r.server_response for r in results) == sorted(p.name for p in tmp_path.iterdir())
    for m, r in zip(outgoing, results, strict=True):
        parsed = message_from_bytes((tmp_path / str(r.server_response)).read_bytes(), policy=policy.default)
        assert parsed["Message-ID"] == m.message_id
    await transport.aclose()


async def test_maildir_write_failure_reaches_every_sender_of_the_group(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the mail directory should be")
    transport = MaildirTransport(tmp_path / "taken" / "mail")

    results = await asyncio.gather(*(transport.send(mail()) for _ in range(5)), return_exceptions=True)

    assert all(isinstance(r, OSError) for r in results)


def test_settings_choose_smtp_when_a_url_is_set_and_maildir_otherwise(tmp_path: Path) -> None:
    smtp = transport_from_settings("smtps://u:p@relay.example.com", tmp_path, concurrency=7)
    assert isinstance(smtp, SmtpTransport) and smtp.use_tls and smtp.concurrency == 7
    maildir = transport_from_settings(None, tmp_path)
    assert isinstance(maildir, MaildirTransport) and maildir.path == tmp_path / "mail"
