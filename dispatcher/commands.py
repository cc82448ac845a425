"""The operator's commands behind `dispatcher ...`: each a thin layer over the domain functions the API
uses, printing aligned tables on stdout and confirmations on stderr. The CLI serves whoever runs the
instance, so commands cover every account unless `--account NAME` narrows them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
import urllib.parse
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from dispatcher import accounts, callbacks, db, events, status, suppressions
from dispatcher.crypto import load_keyring
from dispatcher.delivery import history
from dispatcher.errors import NotFound
from dispatcher.inbound import reports
from dispatcher.settings import Settings


def say(*parts: Any) -> None:
    """A confirmation or progress note: stderr, so stdout stays data."""
    print(*parts, file=sys.stderr)


def table(headers: Sequence[str] | None, rows: Sequence[Sequence[Any]]) -> None:
    """Columns aligned, two spaces apart; `headers` None for label/value lines."""
    cells = [[str(c) for c in row] for row in ([headers] if headers else []) + list(rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))] if cells else []
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def when(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


async def account_id(conn: asyncpg.Connection, name: str | None) -> int | None:
    """The id of `--account NAME`, or None for every account."""
    return None if name is None else (await accounts.get_account(conn, name))["id"]


async def _accounts(conn: asyncpg.Connection, name: str | None) -> list[asyncpg.Record]:
    if name is not None:
        return [await accounts.get_account(conn, name)]
    return await accounts.list_accounts(conn)


# --- accounts and keys -----------------------------------------------------------------------------


async def accounts_create(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    row = await accounts.create_account(conn, args.name)
    print(f"{row['id']}\t{row['name']}")
    return 0


async def accounts_list(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    rows = await accounts.list_accounts(conn)
    table(
        ["ID", "NAME", "KEYS", "SUPPRESS", "CREATED"],
        [(r["id"], r["name"], r["keys"], _on_off(r["suppress_on_bounce"]), when(r["created_at"])) for r in rows],
    )
    return 0


def _on_off(value: bool) -> str:
    return "on" if value else "off"


async def accounts_update(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    row = await accounts.set_suppress_on_bounce(conn, args.name, args.suppress_on_bounce == "on")
    say(f"{row['name']}: hard bounces and complaints suppress the recipient: {_on_off(row['suppress_on_bounce'])}")
    return 0


async def keys_create(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    account = await accounts.get_account(conn, args.account)
    key_id, key = await accounts.create_key(conn, account["id"], args.scope or ["*"], args.allow_ip)
    say(f"created key {key_id} for {args.account} (shown once)")
    print(key)
    return 0


def _key_row(k: asyncpg.Record) -> tuple[Any, ...]:
    state = f"revoked {when(k['revoked_at'])}" if k["revoked_at"] else "active"
    cidrs = ",".join(map(str, k["allowed_cidrs"])) or "any"
    return k["id"], f"{k['prefix']}…", ",".join(k["scopes"]), cidrs, state, when(k["last_used_at"])


async def keys_list(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    account = await accounts.get_account(conn, args.account)
    rows = [_key_row(k) for k in await accounts.list_keys(conn, account["id"])]
    table(["ID", "PREFIX", "SCOPES", "CLIENTS", "STATE", "LAST USED"], rows)
    return 0


async def keys_revoke(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    if not await accounts.revoke_key(conn, args.key_id):
        raise NotFound(f"no live key {args.key_id}")
    say(f"revoked key {args.key_id}")
    return 0


# --- suppressions ---------------------------------------------------------------------------------


async def suppressions_list(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    account = (await accounts.get_account(conn, args.account))["id"]
    rows: list[asyncpg.Record] = []
    while True:
        page = await suppressions.list_suppressions(
            conn, account, after_id=rows[-1]["id"] if rows else 0, reason=args.reason,
            address_prefix=args.address_prefix, since=None, until=None, limit=_PAGE,
        )  # fmt: skip
        rows += page
        if len(page) < _PAGE:
            break
    cells = [(r["address"], r["reason"], events.event_id(r["event_id"]) if r["event_id"] else "-", when(r["created_at"]))
             for r in rows]  # fmt: skip
    table(["ADDRESS", "REASON", "EVENT", "CREATED"], cells)
    return 0


async def bounces_unparsed(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    rows = await reports.list_unparsed(conn, args.lines)
    cells = [(r["id"], when(r["received_at"]), r["mail_from"] or "<>", ",".join(r["rcpt_tos"]), r["size"], r["reason"])
             for r in rows]  # fmt: skip
    table(["ID", "RECEIVED", "FROM", "TO", "BYTES", "WHY"], cells)
    return 0


async def bounces_show(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    row = await reports.get_unparsed(conn, args.mail_id)
    sys.stdout.buffer.write(bytes(row["raw"]))
    sys.stdout.flush()
    return 0


async def suppressions_delete(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    await suppressions.delete_suppression(conn, (await accounts.get_account(conn, args.account))["id"], args.address)
    say(f"{args.address} is off {args.account}'s suppression list: later sends to it go out")
    return 0


# --- status ----------------------------------------------------------------------------------------


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urllib.parse.urlunsplit(parts)


def _database_line(settings: Settings) -> str:
    if settings.database_url:
        return f"{_redact(settings.database_url)} (DISPATCHER_DATABASE_URL)"
    return f"embedded PostgreSQL in {settings.postgres_dir}"


def _due(t: datetime | None) -> str:
    if t is None:
        return ""
    late = time.time() - t.timestamp()
    return f", oldest due {when(t)} ({round(late)} s ago)" if late >= 0 else f", next due {when(t)}"


async def show_status(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    s = await status.read(conn, await account_id(conn, args.account))
    states = ", ".join(f"{n} {state}" for state, n in s.callbacks.items()) or "none"
    version = "current" if s.schema_version == db.SCHEMA_VERSION else f"this release applies {db.SCHEMA_VERSION}"
    table(
        None,
        [
            ("database", _database_line(settings)),
            ("schema", f"version {s.schema_version} ({version})"),
            ("accounts", args.account or "all"),
            ("deliveries", f"{s.pending_deliveries} pending{_due(s.oldest_due)}"),
            ("callbacks", states),
            ("messages", f"{s.messages_waiting} waiting to send{_due(s.next_message_due)}"),
        ],
    )
    return 0


# --- callbacks and deliveries ----------------------------------------------------------------------


async def callbacks_list(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    rows = []
    for account in await _accounts(conn, args.account):
        for cb in await callbacks.list_callbacks(conn, account["id"]):
            j = callbacks.callback_json(cb)
            rows.append((account["name"], j["callbackId"], j["name"], j["status"], j["consecutiveFailures"], j["url"]))
    table(["ACCOUNT", "ID", "NAME", "STATUS", "FAILURES", "URL"], rows)
    return 0


async def _find_callback(conn: asyncpg.Connection, callback_id: str, account: str | None) -> tuple[str, Any]:
    for a in await _accounts(conn, account):
        with contextlib.suppress(NotFound):
            return a["name"], await callbacks.get_callback(conn, a["id"], callback_id)
    raise NotFound(f"no callback {callback_id}")


async def callbacks_show(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    account, row = await _find_callback(conn, args.callback_id, args.account)
    (shown,) = await callbacks.callbacks_json(conn, load_keyring(settings), [row])  # a v1a callback's publicKey
    fields = {"account": account, **shown}
    table(None, [(k, "-" if v is None else v) for k, v in fields.items()])
    return 0


async def deliveries_retry(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    account = await account_id(conn, args.account)
    async with conn.transaction():
        if account is None:
            account = await history.account_of(conn, args.delivery_id)
        await history.retry(conn, account, args.delivery_id)
    say(f"{args.delivery_id} is pending: it is sent again now")
    return 0


# --- events tail -----------------------------------------------------------------------------------

_EVENT_LINE = "{:<19}  {:<12}  {:<12}  {:<16}  {:<24}  {}"
_EVENT_HEADER = _EVENT_LINE.format("OCCURRED", "EVENT", "ACCOUNT", "TYPE", "MESSAGE KEY", "RECIPIENT")
# Concurrent writers may commit a lower event id after a higher one: a follow reads again what was
# recorded in the last COMMIT_LAG seconds (skipping what it printed), so such an event still shows
# unless its transaction took longer than this to commit.
COMMIT_LAG = 2.0
_PAGE = 1000


def _event_line(r: asyncpg.Record) -> str:
    return _EVENT_LINE.format(
        when(r["occurred_at"]), events.event_id(r["id"]), r["account"], r["type"], r["message_key"],
        r["recipient"] or "-",
    )  # fmt: skip


async def events_tail(conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings) -> int:
    f = events.EventFilter(await account_id(conn, args.account), args.type, args.message_key)
    wake = asyncio.Event()
    if args.follow:
        # every commit that queues a delivery notifies this channel; the poll interval covers the rest
        await conn.add_listener("dispatcher_deliveries", lambda *_: wake.set())
    top = await events.last_event_id(conn)
    print(_EVENT_HEADER, flush=True)
    rows = await events.latest_events(conn, f, args.lines) if args.lines else []
    for r in rows:
        print(_event_line(r), flush=True)
    if args.follow:
        await _follow(conn, f, _Tail(top, {r["id"] for r in rows if r["id"] > top}), wake, settings.poll_interval)
    return 0


@dataclass
class _Tail:
    """Where a follow stands: every event up to `floor` is done; `printed` holds those above it already
    shown; `marks` the newest id at each recent read, which become the floor once COMMIT_LAG old."""

    floor: int
    printed: set[int]
    marks: deque[tuple[float, int]] = field(default_factory=deque)


async def _follow(
    conn: asyncpg.Connection, f: events.EventFilter, tail: _Tail, wake: asyncio.Event, poll: float
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        wake.clear()
        await _print_new(conn, f, tail)
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
        _, pending = await asyncio.wait(waits, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()


async def _print_new(conn: asyncpg.Connection, f: events.EventFilter, tail: _Tail) -> None:
    """Print the events after the floor not shown yet, then raise the floor to the newest id COMMIT_LAG ago."""
    now = time.monotonic()
    tail.marks.append((now, await events.last_event_id(conn)))
    after = tail.floor
    while rows := await events.events_after(conn, f, after, _PAGE):
        for r in rows:
            if r["id"] not in tail.printed:
                print(_event_line(r), flush=True)
                tail.printed.add(r["id"])
        after = rows[-1]["id"]
        if len(rows) < _PAGE:
            break
    while tail.marks and now - tail.marks[0][0] >= COMMIT_LAG:
        tail.floor = max(tail.floor, tail.marks.popleft()[1])
    tail.printed = {i for i in tail.printed if i > tail.floor}
