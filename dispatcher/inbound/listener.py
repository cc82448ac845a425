"""The inbound SMTP listener (DISPATCHER_INBOUND_SMTP) where bounces and feedback reports arrive.

It accepts mail only for the bounce address's domain (550 for anything else: never an open relay),
refuses a recipient whose VERP token is forged, tampered or expired (550), mail over
DISPATCHER_INBOUND_MAX_BYTES (552), and sessions beyond DISPATCHER_INBOUND_MAX_CONNECTIONS (421). Each
accepted mail is read by dispatcher/inbound/reports.py, and answered 250 only once its events are
committed (or it is kept for inspection); a database failure answers 451, so the sender tries again.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from dispatcher import events
from dispatcher.db import Database
from dispatcher.group_commit import GroupWriter
from dispatcher.inbound.reports import Mail, Reader
from dispatcher.logs import get_logger
from dispatcher.sending import verp
from dispatcher.settings import Settings

log = get_logger("dispatcher.inbound")
_TOKEN = "dispatcher_token"  # the envelope attribute holding the verified VERP token of its recipient
_MESSAGE = "dispatcher_message"  # and the lookup of the message it names


class _Handler:
    def __init__(self, listener: BounceListener):
        self.listener = listener

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any) -> str:
        listener = self.listener
        at_domain, text = verp.split_address(address, listener.settings.bounce_address or "")
        if not at_domain:
            listener.count("refused_domain")
            return "550 5.7.1 relaying denied: this server takes mail only for its bounce domain"
        if text is not None:
            token = verp.read_token(listener.bounce_key, text, valid_days=listener.settings.bounce_token_days)
            if token is None:
                listener.count("refused_token")
                return "550 5.1.1 no such recipient"
            if getattr(envelope, _TOKEN, None) is None:  # the first recipient with a token names the message
                setattr(envelope, _TOKEN, token)
                setattr(envelope, _MESSAGE, listener.reader.message_for(token))
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        mail = Mail(str(envelope.mail_from or ""), list(envelope.rcpt_tos), raw, getattr(envelope, _TOKEN, None),
                    getattr(envelope, _MESSAGE, None))  # fmt: skip
        try:
            outcome = await self.listener.reader.read(mail)
        except Exception as exc:  # the database: the sender keeps the mail and tries again
            log.warning("inbound mail not recorded", error=str(exc) or type(exc).__name__)
            self.listener.count("error")
            return "451 4.3.0 try again later"
        if outcome.unparsed:
            self.listener.count("unparsed")
            log.info("inbound mail kept for inspection", reason=outcome.unparsed, size=len(raw))
            return "250 2.0.0 kept for inspection"
        self.listener.count("recorded", outcome.recorded)
        self.listener.count("duplicate", outcome.duplicates)
        return "250 2.0.0 OK"


class _Session(SMTP):
    """One SMTP connection; beyond the session limit it is answered 421 and closed."""

    def __init__(self, listener: BounceListener, **kw: Any):
        super().__init__(_Handler(listener), **kw)
        self.listener, self.counted = listener, False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.listener.sessions) >= self.listener.settings.inbound_max_connections:
            self.listener.count("refused_busy")
            transport.write(b"421 4.7.0 too many connections, try again later\r\n")  # type: ignore[attr-defined]
            transport.close()
            return
        self.listener.sessions.add(self)
        self.counted = True
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.counted = False
            self.listener.sessions.discard(self)
            super().connection_lost(exc)


class BounceListener:
    """A background service of `serve` (dispatcher/runtime.py): start() binds, stop() closes."""

    def __init__(self, database: Database, settings: Settings, bounce_key: bytes, metrics: Any = None):
        if not settings.inbound_smtp or not settings.bounce_address:
            raise ValueError("the inbound listener needs DISPATCHER_INBOUND_SMTP and DISPATCHER_BOUNCE_ADDRESS")
        self.settings, self.bounce_key, self.metrics = settings, bounce_key, metrics
        self.writer: GroupWriter[Any, Any] = GroupWriter(database.pool, events.record_groups, max_items=1000)
        self.reader = Reader(
            database.pool, self.writer, settings.bounce_address, bounce_key, settings.bounce_token_days,
            settings.inbound_max_bytes, settings.inbound_keep,
        )  # fmt: skip
        self.sessions: set[_Session] = set()
        self.server: asyncio.AbstractServer | None = None

    def count(self, outcome: str, n: int = 1) -> None:
        if self.metrics is not None and n:
            self.metrics.inbound_mail.labels(outcome).inc(n)

    async def start(self) -> None:
        host, _, port = (self.settings.inbound_smtp or "").rpartition(":")
        hostname = self.settings.bounce_address.rpartition("@")[2] if self.settings.bounce_address else None

        def session() -> SMTP:
            return _Session(self, data_size_limit=self.settings.inbound_max_bytes, hostname=hostname,
                            enable_SMTPUTF8=True, timeout=60)  # fmt: skip

        self.server = await asyncio.get_running_loop().create_server(
            session, host.strip("[]") or None, int(port), family=socket.AF_UNSPEC, reuse_address=True,
            reuse_port=hasattr(socket, "SO_REUSEPORT"),  # `serve --processes N`: every process listens, the kernel shares
        )  # fmt: skip
        log.info("inbound SMTP listening", address=self.settings.inbound_smtp, domain=hostname)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for session in list(self.sessions):  # the mails being read finish in the writer below
                if session.transport is not None:
                    session.transport.close()
            await self.server.wait_closed()
        await self.writer.aclose()
