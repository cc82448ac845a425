"""The mail sender: claim due messages (lease, commit), render, hand to the transport, record the outcome
as ordinary events (`sent`, `deferred`, `bounced`, `failed`) that fan out like any other.

    loop: claim → send each (bounded concurrency) → wait for NOTIFY, the poll interval, or stop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from dispatcher import events
from dispatcher.crypto import Keyring
from dispatcher.db import Database, queries
from dispatcher.logs import get_logger
from dispatcher.loop import BackgroundLoop, worker_id
from dispatcher.sending import providers, tracking, verp
from dispatcher.sending.errors import SendingError
from dispatcher.sending.mime import OutgoingMail, build_message
from dispatcher.sending.models import DefinitionContent, DefinitionOptions, SendRequest
from dispatcher.sending.sandbox import RenderLimits, Sandbox
from dispatcher.sending.transport import MailTransport, Outcome, transport_from_settings
from dispatcher.settings import Settings

log = get_logger("dispatcher.sender")
SQL = queries("sending")
CHANNEL = "dispatcher_messages"
LEASE_SECONDS = 120.0
INACTIVE_RECHECK = 60.0
CLAIM_BATCH = 100

# statusCode of `failed` events: why a message was not sent (documented in README).
UNSUBSCRIBED, DEFINITION_EXPIRED, DEFINITION_DELETED, RENDER_FAILED, RETRIES_EXHAUSTED = 1, 2, 3, 4, 5


def suppressed_reason(reason: str) -> str:
    """The `reason` of a send refused with statusCode 1, from why the recipient is on the suppression list."""
    if reason == "unsubscribed":
        return "recipient is unsubscribed"
    return f"recipient is on the suppression list ({reason})"


def compat(request: dict[str, Any]) -> dict[str, Any]:
    """What a compatibility route (dispatcher/api/compat/) stored beside the native send request: `scope`, more
    Liquid variables (Customer.io's `trigger` and `customer`), and `event`, more data for every event the
    sender records (the identifiers a Customer.io reporting webhook echoes)."""
    extra: dict[str, Any] = request.get("compat") or {}
    return extra


@dataclass
class Result:
    """What happened to one claimed message, ready to be written."""

    status: str  # the message row's new status
    event: events.NewEvent | None
    delay: float | None = None
    rendered: dict[str, Any] | None = None
    redact: bool = False
    tried: int = 1  # counts toward the retry schedule
    mail_message_id: str | None = None  # the Message-ID it went out with (providers echo it)


@dataclass
class Rendered:
    """A claimed message ready for the transport."""

    mail: OutgoingMail
    keep: dict[str, Any] | None  # the rendered content to store, unless retention is disabled
    redact: bool
    to: str


async def render_mail(
    msg: asyncpg.Record, req: SendRequest, content: DefinitionContent, options: DefinitionOptions,
    settings: Settings, keyring: Keyring, sandbox: Sandbox, scope: dict[str, Any] | None = None,
) -> tuple[OutgoingMail, dict[str, Any]]:  # fmt: skip
    """Render the templates in the sandbox, then add tracking and build the MIME message here. `scope`: more
    Liquid variables a compatibility route stored with the send (see `compat` below)."""
    to, attrs, ck = req.recipient.to, req.recipient.attributes, req.recipient.contactKey
    sources = {"from": content.from_, "replyTo": content.replyTo, "subject": content.subject, "html": content.html,
               "text": content.text, "preheader": content.preheader}  # fmt: skip
    fields = {name: (source, name == "html") for name, source in sources.items() if source is not None}
    out: dict[str, str | None] = dict.fromkeys(sources)
    out.update(await sandbox.render(fields, attrs, contact_key=ck, to=to, scope=scope))

    key, account, mid, public = keyring.tracking_key, msg["account_id"], msg["id"], settings.tracking_base_url
    html = out["html"]
    if html is not None and options.tracked:
        html = tracking.rewrite_html(
            html, public, lambda url: tracking.make_token(key, "c", account, mid, url),
            open_token=tracking.make_token(key, "o", account, mid),
        )  # fmt: skip
    subject = out["subject"] or ""
    headers = dict(req.headers or {})
    for name, value in providers.message_key_headers(settings.mail_provider, msg["message_key"]).items():
        if name.lower() not in (h.lower() for h in headers):  # a header the sender set stays theirs
            headers[name] = value
    envelope_from = None
    if settings.bounce_address:
        envelope_from = verp.envelope_sender(settings.bounce_address, keyring.bounce_key, account, mid)
    mail = build_message(
        from_=out["from"] or "", to=to, bcc=req.bcc or [], reply_to=out["replyTo"], subject=subject,
        html=html, text=out["text"], preheader=out["preheader"], headers=headers,
        attachments=req.attachment_bytes(), message_key=msg["message_key"],
        unsubscribe_url=tracking.tracking_url(public, "u", tracking.make_token(key, "u", account, mid)),
        envelope_from=envelope_from,
    )  # fmt: skip
    return mail, {"subject": subject, "html": html, "text": out["text"]}


class MailSender:
    def __init__(
        self, database: Database, settings: Settings, keyring: Keyring, transport: MailTransport | None = None,
        metrics: Any = None,
    ):  # fmt: skip
        self.db, self.settings, self.keyring, self.metrics = database, settings, keyring, metrics
        self.transport = transport or transport_from_settings(
            settings.mail_url, settings.data_dir, concurrency=settings.sender_concurrency
        )
        self.sandbox = Sandbox(
            RenderLimits(settings.render_cpu_seconds, settings.render_max_value, settings.render_memory_mb),
            processes=settings.render_processes,
        )
        self.id = worker_id()
        self._loop = BackgroundLoop("mail-sender", database, self._step, channel=CHANNEL)

    async def start(self) -> None:
        await self.sandbox.start()
        self._loop.start()

    async def stop(self) -> None:
        if not await self._loop.stop(self.settings.shutdown_grace):
            log.warning("sender did not finish in time; leases will expire")
        await self.transport.aclose()
        await self.sandbox.aclose()

    async def _step(self) -> float:
        """One turn of the loop (dispatcher/loop.py): send what is due, or wait for a NOTIFY."""
        claimed = await self.db.pool.fetch(SQL["claim_messages"], self.id, CLAIM_BATCH, LEASE_SECONDS)
        if not claimed:
            return self.settings.poll_interval
        await self._send_all(claimed)
        return 0.0

    async def _send_all(self, claimed: list[asyncpg.Record]) -> None:
        """Decide every claimed message (rendering and transport calls run concurrently), then write
        all outcomes in one transaction."""
        definitions: dict[tuple[int, str], asyncpg.Record] = {}
        by_account: dict[int, set[str]] = {}
        for m in claimed:
            if m["definition_key"]:
                by_account.setdefault(m["account_id"], set()).add(m["definition_key"])
        for account, keys in by_account.items():
            for d in await self.db.pool.fetch(SQL["definitions_by_key"], account, list(keys)):
                definitions.setdefault((account, d["definition_key"]), d)
        rows = await self.db.pool.fetch(
            SQL["suppressed"], [m["account_id"] for m in claimed], [m["recipient"].lower() for m in claimed]
        )
        suppressed = {(r["account_id"], r["address"]): r["reason"] for r in rows}

        async def decide(msg: asyncpg.Record) -> Result | Rendered:
            definition = definitions.get((msg["account_id"], msg["definition_key"]))
            return await self._decide(msg, definition, suppressed.get((msg["account_id"], msg["recipient"].lower())))

        # Render everything, then hand everything to the transport at once: it limits itself (SMTP
        # connections) or groups what it is given (maildir writes).
        ready = await asyncio.gather(*(decide(m) for m in claimed), return_exceptions=True)
        outcomes = await asyncio.gather(*(self._send(m, r) for m, r in zip(claimed, ready, strict=True)),
                                        return_exceptions=True)  # fmt: skip
        done: list[tuple[asyncpg.Record, Result]] = []
        for msg, outcome in zip(claimed, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.error("sending a message failed; its lease will expire", message_key=msg["message_key"],
                          error=repr(outcome))  # fmt: skip
            else:
                done.append((msg, outcome))
        if done:
            try:
                await self._write(done)
            except Exception as exc:  # not recorded: the leases expire and the messages are tried again
                log.warning("recording mail outcomes failed", error=str(exc) or type(exc).__name__)
                await self.db.discard_connections()

    async def _write(self, done: list[tuple[asyncpg.Record, Result]]) -> None:
        columns = list(
            zip(*[(m["id"], r.status, r.tried, r.delay, r.rendered, r.redact, r.mail_message_id) for m, r in done],
                strict=True)
        )  # fmt: skip
        by_account: dict[int, list[events.NewEvent]] = {}
        for msg, result in done:
            if result.event is not None:
                by_account.setdefault(msg["account_id"], []).append(result.event)
        async with self.db.pool.acquire() as conn, conn.transaction():
            await conn.execute(SQL["finish_messages"], self.id, *columns)
            for account, new in by_account.items():
                await events.record_events(conn, account, new)
        if self.metrics is not None:
            for new in by_account.values():
                for e in new:
                    self.metrics.mail.labels(e.type).inc()

    def _event(self, msg: asyncpg.Record, type_: str, data: dict[str, Any]) -> events.NewEvent:
        return events.NewEvent(
            type=type_,
            message_key=msg["message_key"],
            data={**compat(msg["request"]).get("event", {}), **data},
            definition_key=msg["definition_key"],
            recipient=msg["recipient"],
        )

    def _failed(self, msg: asyncpg.Record, code: int, reason: str, redact: bool) -> Result:
        return Result("failed", self._event(msg, "failed", {"statusCode": code, "reason": reason}), redact=redact)

    async def _decide(
        self, msg: asyncpg.Record, definition: asyncpg.Record | None, suppressed: str | None
    ) -> Result | Rendered:
        """`suppressed`: why the recipient is on the account's suppression list, None when it is not."""
        req = SendRequest.model_validate({k: v for k, v in msg["request"].items() if k != "compat"})
        if msg["definition_key"]:
            if definition is None or definition["deleted_at"] is not None:
                return self._failed(msg, DEFINITION_DELETED, "send definition was deleted", False)
            if definition["status"] != "active":
                waited = (datetime.now(UTC) - msg["created_at"]).total_seconds()
                if waited >= self.settings.inactive_definition_expiry:
                    return self._failed(msg, DEFINITION_EXPIRED, "send definition stayed inactive", False)
                return Result("queued", None, delay=INACTIVE_RECHECK, tried=0)  # activation makes it due at once
        content = req.resolve_content(DefinitionContent.model_validate(definition["content"]) if definition else None)
        options = req.resolve_options(DefinitionOptions.model_validate(definition["options"]) if definition else None)
        redact = options.disableMessageRetention
        if suppressed and not options.sendToUnsubscribed:
            return self._failed(msg, UNSUBSCRIBED, suppressed_reason(suppressed), redact)
        try:
            mail, rendered = await render_mail(msg, req, content, options, self.settings, self.keyring, self.sandbox,
                                               compat(msg["request"]).get("scope"))  # fmt: skip
        except SendingError as exc:
            return self._failed(msg, RENDER_FAILED, f"rendering failed: {exc}", redact)
        return Rendered(mail, None if redact else rendered, redact, req.recipient.to.lower())

    async def _send(self, msg: asyncpg.Record, decided: Result | Rendered | BaseException) -> Result:
        if isinstance(decided, BaseException):
            raise decided
        if isinstance(decided, Result):
            return decided
        result = await self.transport.send(decided.mail)
        to, keep, redact = decided.to, decided.keep, decided.redact
        mail_message_id = decided.mail.message_id.strip("<>")
        primary = next((r for r in result.results if r.recipient.lower() == to), result.results[0])
        log.info("mail", message_key=msg["message_key"], outcome=primary.outcome.value, smtp_code=primary.smtp_code)
        if primary.outcome is Outcome.ACCEPTED:
            return Result("sent", self._event(msg, "sent", {}), rendered=keep, redact=redact,
                          mail_message_id=mail_message_id)  # fmt: skip
        if primary.outcome is Outcome.BOUNCED:
            data = {"bounceType": "hard", "smtpCode": primary.smtp_code, "reason": primary.reason}
            return Result("bounced", self._event(msg, "bounced", data), rendered=keep, redact=redact,
                          mail_message_id=mail_message_id)  # fmt: skip
        schedule = self.settings.mail_retry_schedule
        if msg["attempts"] >= len(schedule):
            data = {"statusCode": RETRIES_EXHAUSTED, "reason": f"temporary failures did not clear: {primary.reason}"}
            return Result("failed", self._event(msg, "failed", data), redact=redact)
        data = {"smtpCode": primary.smtp_code, "reason": primary.reason, "attempt": msg["attempts"] + 1}
        return Result("queued", self._event(msg, "deferred", data), delay=schedule[msg["attempts"]])
