"""The live view: new events and delivery outcomes without a reload, by Server-Sent Events.

Recording events (events.fan_out) and delivery outcomes (queue.complete) NOTIFY `dispatcher_live` once per
statement, naming the accounts involved. Each process holds one LISTEN connection for it (`LiveHub`,
opened by the first stream, closed at shutdown); a NOTIFY wakes the streams of the accounts it names, and
each stream reads what is new for its own account after its cursor and sends it as SSE messages whose
id is the cursor, so a reconnecting browser resumes where it left off (Last-Event-ID). While the listener
is down, streams poll at every heartbeat instead.

A stream sends rows rendered by the server (templates/live_rows.html) and then a `change` message,
which pages use to refresh parts of themselves (static/console.js describes both).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from dispatcher import activity, ids
from dispatcher.activity import Cursor
from dispatcher.api.console.pages import CONSOLE_CSP, PAGES, TEMPLATES, View, security_headers
from dispatcher.db import DB_ERRORS
from dispatcher.errors import Forbidden
from dispatcher.logs import get_logger

log = get_logger(__name__)

CHANNEL = "dispatcher_live"
HEARTBEAT = 15.0  # seconds between comments that keep proxies from closing an idle stream
DEBOUNCE = 0.3  # a stream reads at most this often, however many NOTIFYs arrive
MAX_STREAM = 300.0  # a stream ends after this; the browser reconnects, and the session is checked again
RETRY_MS = 2000  # how soon a browser reconnects
PAGE = 100  # rows a stream reads per turn (it goes again at once when there are more)
SHOWN = 50  # rows the live page starts with


@dataclass(eq=False)
class Waiter:
    """One stream's wake-up: set by a NOTIFY naming its account, the listener's loss, or the end."""

    account_id: int
    event: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False


class LiveHub:
    """The process's LISTEN connection for the live streams, opened by the first one that needs it."""

    def __init__(self) -> None:
        self.closing = False
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._waiters: set[Waiter] = set()

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def subscribe(self, account_id: int) -> Waiter:
        waiter = Waiter(account_id)
        self._waiters.add(waiter)
        return waiter

    def unsubscribe(self, waiter: Waiter) -> None:
        self._waiters.discard(waiter)

    async def listen(self, url: str) -> bool:
        """Listen unless already listening (or shutting down); False when the database cannot be reached."""
        if self.listening or self.closing:
            return self.listening
        async with self._lock:
            if self.listening or self.closing:
                return self.listening
            try:
                conn = await asyncpg.connect(url, timeout=5)
                await conn.add_listener(CHANNEL, self._notified)
            except (*DB_ERRORS, TimeoutError) as exc:
                log.warning("the live view cannot listen; streams poll", error=str(exc) or type(exc).__name__)
                return False
            if self.closing:  # the app began shutting down while this connected: close() has run already
                await conn.close()
                return False
            conn.add_termination_listener(self._lost)
            self._conn = conn
        self._wake(self._waiters)  # anything recorded while nobody listened
        return True

    def end_streams(self) -> None:
        """End every stream now (browsers reconnect and resume from their cursor)."""
        for waiter in self._waiters:
            waiter.ended = True
        self._wake(self._waiters)

    async def close(self) -> None:
        self.closing = True
        self.end_streams()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2)
            except (*DB_ERRORS, TimeoutError):
                conn.terminate()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if not payload:  # too many accounts to name: every stream looks
            self._wake(self._waiters)
            return
        accounts = {int(part) for part in payload.split(",") if part.isdigit()}
        self._wake(w for w in self._waiters if w.account_id in accounts)

    def _lost(self, _conn: object) -> None:
        self._conn = None
        self._wake(self._waiters)

    @staticmethod
    def _wake(waiters: Iterable[Waiter]) -> None:
        for waiter in waiters:
            waiter.event.set()


LIVE_HUB = web.AppKey("console_live_hub", LiveHub)


def setup(app: web.Application) -> None:
    app[LIVE_HUB] = LiveHub()

    async def close(app: web.Application) -> None:
        await app[LIVE_HUB].close()

    app.on_shutdown.append(close)  # before the server waits for handlers: streams end at once
    app.on_cleanup.append(close)


def _rows() -> object:
    return TEMPLATES.get_template("live_rows.html").module


def _message(kind: str, cursor: Cursor, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.strip().splitlines() or [""])
    return f"id: {cursor}\nevent: {kind}\n{lines}\n".encode()


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False


@dataclass
class Stream:
    view: View
    response: web.StreamResponse
    cursor: Cursor
    events: bool  # the session may read events (a portal sees its callbacks' outcomes only)
    callback_ids: list[int] | None

    async def send_new(self) -> bool:
        """Send what is new after the cursor; True when there may be more."""
        pool, account = self.view.db.pool, self.view.session.account_id
        rows = _rows()
        events = await activity.events_after(pool, account, self.cursor.event_id, PAGE) if self.events else []
        attempts = await activity.attempts_after(pool, account, self.callback_ids, self.cursor.attempt_id, PAGE)
        out = []
        for e in events:
            self.cursor.event_id = e["id"]
            out.append(_message("event", self.cursor, str(rows.event_row(self.view, e))))  # type: ignore[attr-defined]
        for a in attempts:
            self.cursor.attempt_id = a["id"]
            out.append(_message("outcome", self.cursor, str(rows.outcome_row(self.view, a))))  # type: ignore[attr-defined]
        if out:
            change = {
                "events": len(events),
                "outcomes": len(attempts),
                "callbacks": sorted({ids.encode("cb", a["callback_id"]) for a in attempts}),
            }
            out.append(_message("change", self.cursor, json.dumps(change)))
            await self.response.write(b"".join(out))
        return len(events) == PAGE or len(attempts) == PAGE


@PAGES.page("GET", "/live/stream", portal=True)
async def live_stream(view: View) -> web.StreamResponse:
    """text/event-stream of the session's account: `event` and `outcome` rows, then a `change`."""
    session = view.session
    events = not view.portal and session.may("events:read")
    if not (events or session.may("callbacks:manage")):
        raise Forbidden("this key lacks the events:read scope")
    hub = view.app[LIVE_HUB]
    if hub.closing:
        raise web.HTTPServiceUnavailable()
    callback_ids = list(session.callback_ids) if session.callback_ids is not None else None
    cursor = (
        Cursor.parse(view.request.headers.get("Last-Event-ID"))
        or Cursor.parse(view.request.query.get("after"))
        or await activity.live_cursor(view.db.pool, session.account_id)
    )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    security_headers(response, CONSOLE_CSP)  # Cache-Control: no-store among them
    waiter = hub.subscribe(session.account_id)
    try:
        await response.prepare(view.request)
        await response.write(f"retry: {RETRY_MS}\nid: {cursor}\n\n".encode())
        await _serve(Stream(view, response, cursor, events, callback_ids), hub, waiter)
    except ConnectionResetError:  # the browser went away
        pass
    finally:
        hub.unsubscribe(waiter)
    return response


async def _serve(stream: Stream, hub: LiveHub, waiter: Waiter) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_STREAM
    await hub.listen(stream.view.db.url)
    waiter.event.set()  # first, whatever happened after the cursor
    while not waiter.ended and loop.time() < deadline:
        transport = stream.view.request.transport
        if transport is None or transport.is_closing():
            return
        if not await _wait(waiter.event, min(HEARTBEAT, max(deadline - loop.time(), 0.01))):
            await stream.response.write(b": heartbeat\n\n")
            if not await hub.listen(stream.view.db.url):
                waiter.event.set()  # no NOTIFYs while the listener is down: poll
            continue
        if waiter.ended:
            return
        waiter.event.clear()
        try:
            if await stream.send_new():
                waiter.event.set()
        except DB_ERRORS as exc:
            log.warning("live stream read failed", error=str(exc) or type(exc).__name__)
            return  # the browser reconnects and resumes
        await asyncio.sleep(DEBOUNCE)


@PAGES.page("GET", "/live", scope="events:read")
async def live_page(view: View) -> web.StreamResponse:
    pool, account = view.db.pool, view.session.account_id
    events = await activity.recent_events(pool, account, SHOWN)
    attempts = await activity.recent_attempts(pool, account, None, SHOWN)
    # The stream starts after the newest rows shown (both read from the last day): what arrives later
    # is sent, nothing twice.
    cursor = Cursor(max((e["id"] for e in events), default=0), max((a["id"] for a in attempts), default=0))
    return view.render(
        "live.html", active="/live", events=events, attempts=attempts, cursor=str(cursor), now=datetime.now(UTC)
    )
