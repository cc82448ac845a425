"""Bounce and complaint mail in, events out: read the mail (dispatcher/inbound/bounces.py), find the
message each report is about, and record `bounced`, `deferred` or `complained` through the one event
path (which also suppresses hard-bounced and complaining addresses). Mail that cannot be read, or whose
message cannot be found, is kept for inspection instead: never a guessed event.

The message is found, in this order: the VERP token of the address the report was sent to (verified
when the listener accepted the recipient); the VERP token in the original message's Return-Path, quoted
in the report; the original Message-ID, which dispatcher recorded when it sent the mail."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from dispatcher import events
from dispatcher.db import queries
from dispatcher.errors import NotFound
from dispatcher.group_commit import GroupWriter
from dispatcher.inbound.bounces import Report, Unparseable, parse
from dispatcher.sending import verp

SQL = queries("bounces")


@dataclass(frozen=True, slots=True)
class Mail:
    """One mail as the listener received it."""

    mail_from: str
    rcpt_tos: Sequence[str]
    raw: bytes
    token: verp.Token | None  # the verified token of the recipient address, if it had one
    message: asyncio.Future[asyncpg.Record | None] | None = None  # its message, looked up from RCPT on


@dataclass(slots=True)
class Outcome:
    recorded: int = 0
    duplicates: int = 0
    unparsed: str | None = None  # why the mail was kept for inspection instead


@dataclass(slots=True)
class Reader:
    """What turning mail into events needs: the database, the bounce key and the listener's limits."""

    pool: asyncpg.Pool
    writer: GroupWriter[tuple[int, Sequence[events.NewEvent]], tuple[list[asyncpg.Record], int]]
    bounce_address: str
    bounce_key: bytes
    token_days: float
    max_bytes: int
    keep: int

    async def read(self, mail: Mail) -> Outcome:
        try:
            reports = await asyncio.to_thread(parse, mail.raw, max_bytes=self.max_bytes)  # untrusted: off the loop
        except Unparseable as exc:
            return await self._keep(mail, f"unreadable: {exc}")
        if not reports:
            return await self._keep(mail, "unreadable: no report in it")
        digest = hashlib.sha256(mail.raw).hexdigest()[:24]
        found: list[tuple[int, events.NewEvent]] = []
        for i, report in enumerate(reports):
            message = await self._message(mail, report)
            if message is None:
                return await self._keep(mail, "no message of this service matches the report")
            found.append((message["account_id"], _event(report, message, f"bounce:{digest}:{i}")))
        outcome = Outcome()
        by_account: dict[int, list[events.NewEvent]] = {}
        for account, event in found:
            by_account.setdefault(account, []).append(event)
        for account, new in by_account.items():
            _, created = await self.writer.write((account, new), items=len(new))
            outcome.recorded += created
            outcome.duplicates += len(new) - created
        return outcome

    def message_for(self, token: verp.Token) -> asyncio.Future[asyncpg.Record | None]:
        """The message a verified token names, looked up now (the listener starts this when it accepts
        the recipient, so the lookup overlaps the rest of the SMTP dialogue)."""
        return asyncio.ensure_future(self.pool.fetchrow(SQL["message_for_token"], token.message_id, token.account_id))

    async def _message(self, mail: Mail, report: Report) -> asyncpg.Record | None:
        if mail.message is not None:
            return await asyncio.shield(mail.message)  # one lookup serves every report of the mail
        token = mail.token
        if token is None and report.original_return_path:
            at_domain, text = verp.split_address(report.original_return_path, self.bounce_address)
            if at_domain and text:
                token = verp.read_token(self.bounce_key, text, valid_days=self.token_days)
        if token is not None:
            return await self.pool.fetchrow(SQL["message_for_token"], token.message_id, token.account_id)
        if report.original_message_id:
            return await self.pool.fetchrow(SQL["message_for_mail_message_id"], report.original_message_id)
        return None

    async def _keep(self, mail: Mail, reason: str) -> Outcome:
        await self.pool.execute(
            SQL["keep_unparsed"], mail.mail_from, list(mail.rcpt_tos), len(mail.raw), reason[:500],
            mail.raw[: self.max_bytes], self.keep,
        )  # fmt: skip
        return Outcome(unparsed=reason)


def _event(report: Report, message: asyncpg.Record, client_id: str) -> events.NewEvent:
    data: dict[str, Any] = {"report": report.method}
    if report.kind == "bounced":
        data["bounceType"] = report.bounce_type or "hard"
    for key, value in (("smtpCode", report.smtp_code), ("status", report.status), ("reason", report.reason),
                       ("feedbackType", report.feedback_type)):  # fmt: skip
        if value is not None:
            data[key] = value
    return events.NewEvent(
        type=report.kind,
        message_key=message["message_key"],
        data=data,
        client_id=client_id,
        definition_key=message["definition_key"],
        recipient=report.recipient or message["recipient"],
    )


async def list_unparsed(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """The unreadable mails kept for inspection, newest first."""
    return await conn.fetch(SQL["list_unparsed"], limit)


async def get_unparsed(conn: asyncpg.Connection, mail_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(SQL["get_unparsed"], mail_id)
    if row is None:
        raise NotFound(f"no kept mail {mail_id}")
    return row
