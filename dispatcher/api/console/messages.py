"""Messages in the console: search events by messageKey, recipient, type, definition and time; a
message's timeline with its derived status, its send and rendered content where retained, and the
deliveries each event caused; a delivery's page with its attempts (also in the portal, for the
link's callbacks) and a retry button for keys that may manage callbacks."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from dispatcher import events, ids
from dispatcher.api.console.pages import PAGES, View
from dispatcher.delivery import history
from dispatcher.errors import InvalidRequest, NotFound
from dispatcher.sending import service

PAGE_SIZE = 50
RECIPIENT_DAYS = 7  # a recipient is read from the rows, not an index: without From, look back this far


def message_path(key: str) -> str:
    """The timeline's path: a key may hold any character, '/' and '?' included."""
    return "/messages/" + quote(key, safe="")


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _moment(name: str, label: str, value: str) -> datetime | None:
    """A datetime-local input's value, read as UTC (an explicit offset is honoured)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{label} is not a date and time (YYYY-MM-DDTHH:MM, UTC)", field=name) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Search:
    """The search form, as the query string carries it (so a search is a link)."""

    key: str = ""
    recipient: str = ""
    type: str = ""
    definition: str = ""
    since: str = ""  # the form's `from` and `to`, as typed
    until: str = ""

    @classmethod
    def read(cls, query: Any) -> Search:
        def get(name: str, most: int) -> str:
            return query.get(name, "").strip()[:most]

        return cls(get("key", 100), get("recipient", 320), get("type", 40), get("definition", 100),
                   get("from", 40), get("to", 40))  # fmt: skip

    @property
    def empty(self) -> bool:
        return not any((self.key, self.recipient, self.type, self.definition, self.since, self.until))

    @property
    def only_key(self) -> bool:
        return bool(self.key) and Search(key=self.key) == self

    def query(self) -> dict[str, str]:
        return {"key": self.key, "recipient": self.recipient, "type": self.type, "definition": self.definition,
                "from": self.since, "to": self.until}  # fmt: skip

    def window(self, now: datetime) -> tuple[datetime | None, datetime | None, bool]:
        """(since, until, whether since is the recipient search's default)."""
        since = _moment("from", "From", self.since)
        until = _moment("to", "To", self.until)
        if self.recipient and since is None:
            return now - timedelta(days=RECIPIENT_DAYS), until, True
        return since, until, False


async def _message_exists(view: View, key: str) -> bool:
    async with view.db.read_pool.acquire() as conn:
        if await events.message_timeline(conn, view.session.account_id, key):
            return True
        return await service.get_message(conn, view.session.account_id, key) is not None


@PAGES.page("GET", "/messages", scope="events:read")
async def messages_page(view: View) -> web.StreamResponse:
    search = Search.read(view.request.query)
    cursor = view.request.query.get("cursor") or None
    context: dict[str, Any] = {"search": search, "types": events.EVENT_TYPES, "rows": None, "next_cursor": None}
    try:
        if search.type and search.type not in events.EVENT_TYPES:
            raise InvalidRequest("choose an event type from the list", field="type")
        since, until, defaulted = search.window(datetime.now(UTC))
    except InvalidRequest as err:
        return view.render("messages.html", status=400, active="/messages", error=err.message, **context)
    if search.only_key and cursor is None and await _message_exists(view, search.key):
        view.redirect(message_path(search.key))
    account_id = view.session.account_id
    async with view.db.read_pool.acquire() as conn:
        page = await events.keyset_page(
            "events", cursor, PAGE_SIZE,
            lambda before_id, limit: events.search_events(
                conn, account_id, before_id=before_id, types=[search.type] if search.type else None,
                message_key=search.key or None, definition_key=search.definition or None,
                recipient=search.recipient or None, since=since, until=until, limit=limit,
            ),
            lambda row: row,
        )  # fmt: skip
    context.update(rows=page["events"], next_cursor=page["nextCursor"])
    return view.render(
        "messages.html", active="/messages", cursor=cursor, defaulted_since=since if defaulted else None,
        message_path=message_path, recipient_days=RECIPIENT_DAYS, **context,
    )  # fmt: skip


@PAGES.page("GET", "/messages/{messageKey}", scope="events:read")
async def message_page(view: View) -> web.StreamResponse:
    key = view.request.match_info["messageKey"]
    if not 1 <= len(key) <= 100:
        raise NotFound("no such message")
    account_id = view.session.account_id
    async with view.db.read_pool.acquire() as conn:
        rows = await events.message_timeline(conn, account_id, key)
        sent = await service.get_message(conn, account_id, key)
        deliveries = await history.event_deliveries(conn, account_id, rows)
    if not rows and sent is None:
        raise NotFound("no such message")
    derived = events.message_status([(r["type"], r["data"]) for r in rows])
    if sent is not None and (sent["status"] in ("draft", "scheduled") or derived is None):
        derived = sent["status"]  # as GET /v1/messages/{key} answers
    outcomes = Counter(d["status"] for ds in deliveries.values() for d in ds)
    return view.render(
        "message.html", active="/messages", key=key, derived=derived, outcomes=sorted(outcomes.items()),
        message_path=message_path, rows=rows, sent=sent,
        content=sent["rendered"] if sent is not None else None, deliveries=deliveries, pretty=pretty,
        delivery_id=lambda n: ids.encode("dlv", n), callback_id=lambda n: ids.encode("cb", n),
        event_id=events.event_id,
    )  # fmt: skip


@PAGES.page("GET", "/messages/{messageKey}/deliveries/{eventId}", scope="events:read")
async def event_deliveries_fragment(view: View) -> web.StreamResponse:
    """One event's delivery rows alone: the timeline refetches them while one is pending (console.js)."""
    key = view.request.match_info["messageKey"]
    wanted = ids.decode("evt", view.request.match_info["eventId"], "event")
    account_id = view.session.account_id
    async with view.db.read_pool.acquire() as conn:
        rows = [r for r in await events.message_timeline(conn, account_id, key) if r["id"] == wanted]
        if not rows:
            raise NotFound("no such event")
        deliveries = await history.event_deliveries(conn, account_id, rows)
    return view.render(
        "message_deliveries.html", ds=deliveries[wanted], delivery_id=lambda n: ids.encode("dlv", n),
        callback_id=lambda n: ids.encode("cb", n),
    )  # fmt: skip


# --- one delivery ----------------------------------------------------------------------------------


async def _delivery(view: View, conn: Any, *, reading: bool = True) -> tuple[Any, list[Any]]:
    """The delivery of the URL, of this account and, in a portal, of one of the link's callbacks (a
    portal session reads its callbacks' deliveries; a console session needs events:read to read one)."""
    delivery_id = view.request.match_info["deliveryId"]
    row, attempts = await history.delivery_with_attempts(conn, view.session.account_id, delivery_id)
    if view.portal and not view.session.reaches(row["callback_id"]):
        raise NotFound("no such delivery")
    if reading and not view.portal:
        view.require("events:read")
    return row, attempts


def _body(text: str) -> str:
    try:
        return json.dumps(orjson.loads(text), indent=2, ensure_ascii=False)
    except orjson.JSONDecodeError:
        return text


@PAGES.page("GET", "/deliveries/{deliveryId}", portal=True)
async def delivery_page(view: View) -> web.StreamResponse:
    async with view.db.pool.acquire() as conn:
        row, attempts = await _delivery(view, conn)
        event = await history.delivery_event(conn, view.session.account_id, row)
    shown = []
    for a in attempts:
        body, headers = history.request_shown(event, a["webhook_id"], a["started_at"]) if event else (None, None)
        shown.append({"attempt": a, "headers": headers, "body": _body(body) if body is not None else None})
    done = view.request.query.get("done", "")
    return view.render(
        "delivery.html", active="/callbacks" if view.portal else "/messages", delivery=row, event=event,
        attempts=shown, delivery_id=ids.encode("dlv", row["id"]), callback_id=ids.encode("cb", row["callback_id"]),
        event_id=events.event_id(row["event_id"]), message_path=message_path,
        may_retry=view.session.may("callbacks:manage"),
        notice={"retried": "The delivery is queued to be sent again now."}.get(done),
    )  # fmt: skip


@PAGES.page("POST", "/deliveries/{deliveryId}/retry", scope="callbacks:manage", portal=True)
async def retry_delivery(view: View) -> web.StreamResponse:
    async with view.db.pool.acquire() as conn:
        row, _ = await _delivery(view, conn, reading=False)
        delivery_id = ids.encode("dlv", row["id"])
        await history.retry(conn, view.session.account_id, delivery_id)
    view.redirect("/deliveries/" + delivery_id, done="retried")
