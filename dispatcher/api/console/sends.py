"""Sends in the console: drafts (send or discard), scheduled sends, and the suppression list (search by
address, take an address off). A scheduled send cannot be cancelled: the API discards drafts only
(DELETE /v1/messages/{key}), so the console offers no more. Message keys travel in form fields, never
in the path, since a key may hold any printable character."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from dispatcher import suppressions
from dispatcher.api.console.pages import PAGES, View
from dispatcher.errors import InvalidRequest
from dispatcher.sending import models, service

SCOPE = "messages:send"
PAGE = 100
DONE = {
    "sent": "The draft was queued for sending.",
    "discarded": "The draft was discarded.",
    "unsuppressed": "The address was taken off the suppression list: later sends to it go out again.",
}


def _message(row: Any) -> dict[str, Any]:
    return {**dict(row), "link": "/messages/" + quote(row["message_key"], safe="")}


@PAGES.page("GET", "/sends", scope=SCOPE)
async def sends_page(view: View) -> web.StreamResponse:
    query = view.request.query
    address = query.get("address", "").strip()[: suppressions.MAX_ADDRESS]
    after = query.get("after", "")
    after_id = int(after) if after.isdigit() and len(after) < 19 else 0
    async with view.db.pool.acquire() as conn:
        drafts = await service.list_waiting(conn, view.session.account_id, "draft", PAGE)
        scheduled = await service.list_waiting(conn, view.session.account_id, "scheduled", PAGE)
        suppressed = await suppressions.list_suppressions(
            conn, view.session.account_id, after_id=after_id, reason=None, address_prefix=address or None,
            since=None, until=None, limit=PAGE + 1,
        )  # fmt: skip
    return view.render(
        "sends.html", active="/sends", drafts=[_message(r) for r in drafts],
        scheduled=[_message(r) for r in scheduled], suppressions=suppressed[:PAGE], address=address,
        next_after=suppressed[PAGE - 1]["id"] if len(suppressed) > PAGE else None, page_size=PAGE,
        notice=DONE.get(query.get("done", "")),
    )  # fmt: skip


def _message_key(view: View) -> str:
    assert view.form is not None
    try:
        return models.validate_message_key(view.form.get("messageKey", ""))
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="messageKey") from None


@PAGES.page("POST", "/sends/send-draft", scope=SCOPE)
async def send_draft(view: View) -> web.StreamResponse:
    key = _message_key(view)
    async with view.db.pool.acquire() as conn, conn.transaction():
        await service.send_draft(conn, view.session.account_id, key)
    view.redirect("/sends", done="sent")


@PAGES.page("POST", "/sends/discard-draft", scope=SCOPE)
async def discard_draft(view: View) -> web.StreamResponse:
    key = _message_key(view)
    async with view.db.pool.acquire() as conn:
        await service.discard_draft(conn, view.session.account_id, key)
    view.redirect("/sends", done="discarded")


@PAGES.page("POST", "/sends/unsuppress", scope=SCOPE)
async def unsuppress(view: View) -> web.StreamResponse:
    address = view.field("address")
    if not address or len(address) > suppressions.MAX_ADDRESS:
        raise InvalidRequest("name the address to take off the list", field="address")
    async with view.db.pool.acquire() as conn:
        await suppressions.delete_suppression(conn, view.session.account_id, address)
    view.redirect("/sends", done="unsuppressed")
