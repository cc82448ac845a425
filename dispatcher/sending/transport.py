"""Handing finished messages to a mail system, and what it said per recipient.

Owns the ``MailTransport`` protocol and its two implementations: SMTP (aiosmtplib) for
production and a maildir-like directory of ``.eml`` files for development and tests.
Delivery outcomes are data, never exceptions: each envelope recipient ends up
``accepted``, ``deferred`` (try again later) or ``bounced`` (permanent, with the SMTP
code and reason), which is what the delivery worker needs to schedule retries and emit
Sent / Bounced events.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import ssl
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from dispatcher.sending.mime import OutgoingMail

__all__ = [
    "MailTransport",
    "MaildirTransport",
    "Outcome",
    "RecipientResult",
    "SendResult",
    "SmtpTransport",
    "transport_from_settings",
]


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


@dataclass(frozen=True, slots=True)
class RecipientResult:
    recipient: str
    outcome: Outcome
    smtp_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    results: tuple[RecipientResult, ...]
    # The server's answer to DATA, often carrying its queue id; useful in logs.
    server_response: str | None = None

    def with_outcome(self, outcome: Outcome) -> list[RecipientResult]:
        return [r for r in self.results if r.outcome is outcome]

    @property
    def accepted(self) -> list[RecipientResult]:
        return self.with_outcome(Outcome.ACCEPTED)

    @property
    def deferred(self) -> list[RecipientResult]:
        return self.with_outcome(Outcome.DEFERRED)

    @property
    def bounced(self) -> list[RecipientResult]:
        return self.with_outcome(Outcome.BOUNCED)

    @classmethod
    def for_all(
        cls,
        recipients: Iterable[str],
        outcome: Outcome,
        code: int | None = None,
        reason: str | None = None,
        server_response: str | None = None,
    ) -> SendResult:
        return cls(
            tuple(RecipientResult(r, outcome, code, reason) for r in recipients),
            server_response,
        )


class MailTransport(Protocol):
    async def send(self, mail: OutgoingMail) -> SendResult: ...

    async def aclose(self) -> None: ...


def _outcome_for(code: int) -> Outcome:
    return Outcome.BOUNCED if 500 <= code < 600 else Outcome.DEFERRED


_SCHEMES = {
    # scheme: (default port, implicit TLS, STARTTLS: None = when offered, True = required)
    "smtp": (25, False, None),
    "smtp+starttls": (587, False, True),
    "smtps": (465, True, False),
}


class SmtpTransport:
    """Send through an SMTP relay, one connection per message, at most ``concurrency`` at once.

    A connection per message keeps the transport free of shared state: concurrent sends
    need no lock, and there is no idle connection for the relay to drop between sends.
    At transactional volumes the extra handshake is cheap next to the relay's own work.

    Only answers about a recipient or the message itself count as bounces: a 5xx to
    RCPT TO bounces that recipient, a 5xx to MAIL FROM or DATA bounces all of them.
    Failures to connect, authenticate or negotiate TLS are configuration or network
    problems, so every recipient is deferred and the message can be retried later.
    """

    def __init__(
        self,
        *,
        hostname: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool = False,
        start_tls: bool | None = None,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        concurrency: int = 20,
    ) -> None:
        self.hostname = hostname
        self.port = port
        self.username = username
        self.password = password
        self.use_tls = use_tls
        self.start_tls = start_tls
        self.timeout = timeout
        self.tls_context = tls_context
        self.concurrency = concurrency
        self._connections = asyncio.Semaphore(concurrency)

    @classmethod
    def from_url(cls, url: str, *, tls_context: ssl.SSLContext | None = None, concurrency: int = 20) -> SmtpTransport:
        """``smtp://`` (STARTTLS when offered), ``smtp+starttls://`` (STARTTLS required)
        or ``smtps://`` (implicit TLS); ``user:pass@`` percent-decoded; ``?timeout=`` seconds.
        """
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"unsupported mail URL scheme {parts.scheme!r}; use smtp, smtp+starttls or smtps")
        if not parts.hostname:
            raise ValueError("mail URL has no host")
        default_port, use_tls, start_tls = _SCHEMES[parts.scheme]
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"timeout"}
        if unknown:
            raise ValueError(f"unknown mail URL parameter(s): {', '.join(sorted(unknown))}")
        timeout = 30.0
        if "timeout" in query:
            try:
                timeout = float(query["timeout"][-1])
            except ValueError:
                raise ValueError("mail URL timeout must be a number of seconds") from None
            if timeout <= 0:
                raise ValueError("mail URL timeout must be positive")
        return cls(
            hostname=parts.hostname,
            port=parts.port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            use_tls=use_tls,
            start_tls=start_tls,
            timeout=timeout,
            tls_context=tls_context,
            concurrency=concurrency,
        )

    def __repr__(self) -> str:
        # Never show the password, not even in a traceback.
        return f"SmtpTransport({self.hostname}:{self.port}, user={self.username!r}, tls={self.use_tls})"

    async def send(self, mail: OutgoingMail) -> SendResult:
        async with self._connections:
            return await self._send(mail)

    async def _send(self, mail: OutgoingMail) -> SendResult:
        client = _SmtpClient(
            hostname=self.hostname,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            timeout=self.timeout,
            tls_context=self.tls_context,
        )
        try:
            await client.connect()
        except (OSError, aiosmtplib.SMTPException) as exc:
            await client.wait_closed()
            code = exc.code if isinstance(exc, aiosmtplib.SMTPResponseException) else None
            return SendResult.for_all(mail.recipients, Outcome.DEFERRED, code, _reason(exc))
        except BaseException:  # cancelled (shutdown) while connecting: leave no socket behind
            client.close()
            raise
        # Filled as the server answers; whoever has no answer when the connection
        # breaks is deferred, since nothing was confirmed for them.
        results: dict[str, RecipientResult] = {}
        server_response: str | None = None
        try:
            server_response = await self._transaction(client, mail, results)
        except (OSError, aiosmtplib.SMTPException) as exc:
            for recipient in mail.recipients:
                if recipient not in results:
                    results[recipient] = RecipientResult(recipient, Outcome.DEFERRED, None, _reason(exc))
        finally:
            try:
                await client.quit()
            except (OSError, aiosmtplib.SMTPException):
                client.close()
            except BaseException:  # cancelled (shutdown) mid-send: close the socket, then go on cancelling
                client.close()
                raise
            await client.wait_closed()
        return SendResult(tuple(results[r] for r in mail.recipients), server_response)

    async def _transaction(
        self, client: aiosmtplib.SMTP, mail: OutgoingMail, results: dict[str, RecipientResult]
    ) -> str | None:
        data = mail.as_bytes()
        options = [f"SIZE={len(data)}"] if client.supports_extension("size") else []
        try:
            await client.mail(mail.envelope_from, options=options)
        except aiosmtplib.SMTPResponseException as exc:
            for recipient in mail.recipients:
                results[recipient] = RecipientResult(recipient, _outcome_for(exc.code), exc.code, exc.message)
            return None

        for recipient in mail.recipients:
            try:
                await client.rcpt(recipient)
            except aiosmtplib.SMTPResponseException as exc:
                results[recipient] = RecipientResult(recipient, _outcome_for(exc.code), exc.code, exc.message)
        accepted = [r for r in mail.recipients if r not in results]
        if not accepted:
            return None

        try:
            response = await client.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            for recipient in accepted:
                results[recipient] = RecipientResult(recipient, _outcome_for(exc.code), exc.code, exc.message)
            return None
        for recipient in accepted:
            results[recipient] = RecipientResult(recipient, Outcome.ACCEPTED, response.code, response.message)
        return response.message

    async def aclose(self) -> None:
        """Nothing to release: connections live only for one send."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.message
    return str(exc) or type(exc).__name__


class _SmtpClient(aiosmtplib.SMTP):
    """aiosmtplib's client, plus a way to wait until its socket is really closed.

    Closing a TLS connection takes a round trip (close_notify) after ``close()`` returns.
    Waiting for it means a finished send never leaves a socket behind, even when the
    event loop stops right afterwards (shutdown, tests).
    """

    _CLOSE_TIMEOUT = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._closed_transports: list[asyncio.BaseTransport] = []

    def close(self) -> None:
        if self.transport is not None:
            self._closed_transports.append(self.transport)
        super().close()

    async def wait_closed(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._CLOSE_TIMEOUT
        for transport in self._closed_transports:
            sock = transport.get_extra_info("socket")
            while sock is not None and sock.fileno() != -1:
                if loop.time() >= deadline:
                    # The peer never finished the TLS shutdown; stop waiting for it.
                    if isinstance(transport, asyncio.Transport):
                        transport.abort()
                        await asyncio.sleep(0)
                    break
                await asyncio.sleep(0.005)
        self._closed_transports.clear()


_UNSAFE_FILENAME_RE = re.compile(r"[^A-Za-z0-9._@+-]")
_FILES_PER_SLICE = 16  # files written between two turns of the event loop


class MaildirTransport:
    """Write each message to ``<path>/<UTC timestamp>-<message-id>.eml``.

    The file is written under a dot-name, flushed to disk and renamed into place, so a reader
    listing ``*.eml`` never sees a partial message. Every recipient counts as accepted. Messages sent
    concurrently are written together (a group write), so the filesystem is flushed once per group
    rather than once per message: the sender hands over everything it claimed at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._queue: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def send(self, mail: OutgoingMail) -> SendResult:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{_UNSAFE_FILENAME_RE.sub('_', mail.message_id.strip('<>'))}.eml"
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((name, mail.as_bytes(), written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        await written
        return SendResult.for_all(mail.recipients, Outcome.ACCEPTED, server_response=name)

    async def _write_queued(self) -> None:
        while self._queue:
            group, self._queue = self._queue, []
            try:
                await self._write([(name, data) for name, data, _ in group])
            except Exception as exc:
                for _, _, written in group:  # each sender gets its own error (a shared one grows tracebacks)
                    if not written.done():
                        written.set_exception(OSError(getattr(exc, "errno", None), f"maildir write failed: {exc}"))
            except BaseException:  # cancelled: nobody may wait forever
                for _, _, written in group + self._queue:
                    written.cancel()
                self._queue = []
                raise
            else:
                for _, _, written in group:
                    if not written.done():  # its sender was cancelled
                        written.set_result(None)

    async def _write(self, files: list[tuple[str, bytes]]) -> None:
        """Create and rename the files on the event loop, a few at a time, and flush in a thread.

        Creating or renaming a file takes microseconds, but a thread doing it gives up the GIL for
        every syscall and must win it back from the busy event loop each time: measured in the
        `send` bench, 0.9 ms a file that way against tens of microseconds here. The flushes wait
        on the disk, so they go to a thread: one flush for the whole group, twice (contents before
        they get their final names, names before the sender records them as sent). A per-file
        fsync costs a journal commit each, about 1 ms on this project's CI disk."""
        self.path.mkdir(parents=True, exist_ok=True)
        for i, (name, data) in enumerate(files, 1):
            with open(os.path.join(self.path, f".{name}.tmp"), "wb") as handle:  # noqa: ASYNC230 (measured, above)
                handle.write(data)
            if i % _FILES_PER_SLICE == 0:
                await asyncio.sleep(0)  # let requests in between
        await asyncio.to_thread(_flush_filesystem, self.path)
        for i, (name, _) in enumerate(files, 1):
            os.replace(os.path.join(self.path, f".{name}.tmp"), os.path.join(self.path, name))
            if i % _FILES_PER_SLICE == 0:
                await asyncio.sleep(0)
        await asyncio.to_thread(_flush_filesystem, self.path)

    async def aclose(self) -> None:
        """Finish writing what was handed over."""
        if self._writer is not None:
            await self._writer


_SYNCFS = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None) if sys.platform == "linux" else None


def _flush_filesystem(directory: Path) -> None:
    """Make everything written under ``directory`` durable: syncfs(2) on Linux flushes only that
    filesystem; elsewhere sync(2) flushes all of them."""
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
    finally:
        os.close(fd)


def transport_from_settings(mail_url: str | None, data_dir: Path, *, concurrency: int = 20) -> MailTransport:
    """SMTP (at most ``concurrency`` connections) when a mail URL is configured, otherwise ``.eml``
    files under ``data_dir/mail``."""
    if mail_url:
        return SmtpTransport.from_url(mail_url, concurrency=concurrency)
    return MaildirTransport(Path(data_dir) / "mail")
