"""API keys in the console: create (the key shown once), list with last use, revoke. Only a `*` key
manages keys, and a key is revoked only within its own account."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dispatcher import accounts
from dispatcher.api.console.pages import PAGES, View
from dispatcher.errors import InvalidRequest, NotFound


async def _list(view: View, **context: Any) -> web.Response:
    rows = await accounts.list_keys(view.db.pool, view.session.account_id)
    return view.render("keys.html", active="/keys", keys=rows, scopes=accounts.SCOPES, **context)


@PAGES.page("GET", "/keys", scope="*")
async def keys_page(view: View) -> web.StreamResponse:
    return await _list(view, notice={"revoked": "The key was revoked."}.get(view.request.query.get("done", "")))


@PAGES.page("POST", "/keys", scope="*")
async def create_key(view: View) -> web.StreamResponse:
    assert view.form is not None
    scopes = [s for s in view.form.getall("scope", []) if s]
    cidrs = [c.strip() for c in view.field("cidrs").replace(",", " ").split() if c.strip()]
    if not scopes:
        raise InvalidRequest("choose at least one scope", field="scope")
    try:
        async with view.db.pool.acquire() as conn:
            key_id, key = await accounts.create_key(conn, view.session.account_id, scopes, cidrs)
    except ValueError as err:
        raise InvalidRequest(str(err), field="scope") from None
    # Rendered, not redirected: the key is shown this once and never lands in a URL or the history.
    return await _list(view, created=key, created_id=key_id)


@PAGES.page("POST", "/keys/{keyId}/revoke", scope="*")
async def revoke_key(view: View) -> web.StreamResponse:
    raw = view.request.match_info["keyId"]
    key_id = int(raw) if raw.isdigit() and len(raw) < 19 else 0
    if not await accounts.revoke_account_key(view.db.pool, view.session.account_id, key_id):
        raise NotFound("no such key, or it is already revoked")
    view.redirect("/keys", done="revoked")
