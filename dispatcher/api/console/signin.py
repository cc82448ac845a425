"""Signing in to the console with an API key, signing out, and the console's static files."""

from __future__ import annotations

import hmac
from datetime import timedelta
from importlib import resources

from aiohttp import web

from dispatcher import accounts, sessions
from dispatcher.api.console.pages import (
    COOKIE,
    NAV,
    PAGES,
    SIGN_IN_COOKIE,
    TEMPLATES,
    View,
    console_session,
    error_page,
    html,
    new_sign_in_token,
    read_form,
    same_origin,
    set_cookie,
)
from dispatcher.api.keys import DB, SETTINGS
from dispatcher.errors import DispatcherError, Forbidden

STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


def _next(value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if value and value.startswith("/console") and not value.startswith("//") and "\\" not in value:
        return value
    return "/console"


def _sign_in_form(request: web.Request, next_path: str, *, error: str | None = None, status: int = 200) -> web.Response:
    token = new_sign_in_token()
    body = TEMPLATES.get_template("signin.html").render(csrf=token, next=next_path, error=error)
    response = html(request, body, status)
    set_cookie(request, response, SIGN_IN_COOKIE, token, 3600)
    return response


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    if await console_session(request) is not None:
        raise web.HTTPSeeOther(_next(request.query.get("next")))
    return _sign_in_form(request, _next(request.query.get("next")))


async def sign_in(request: web.Request) -> web.StreamResponse:
    """The key is checked like an API request's (live, from an allowed address); the session gets its
    scopes and ends when the key is revoked."""
    try:
        form = await read_form(request)
    except DispatcherError as err:
        return error_page(request, err.status, err.message)
    next_path = _next(form.get("next"))
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    token = form.get("csrf", "")
    if not (expected and hmac.compare_digest(token.encode(), expected.encode()) and same_origin(request)):
        return _sign_in_form(request, next_path, error="The sign-in form expired. Please try again.", status=403)
    principal = await accounts.authenticate(request.app[DB].pool, form.get("key", "").strip())
    if principal is None or not principal.allows_ip(request.remote):
        return _sign_in_form(request, next_path, error="That API key is not valid.", status=401)
    settings = request.app[SETTINGS]
    lifetime = timedelta(seconds=settings.console_session_lifetime)
    token, _ = await sessions.start(
        request.app[DB].pool, account_id=principal.account_id, kind="console", scopes=principal.scopes,
        key_id=principal.key_id, lifetime=lifetime,
    )  # fmt: skip
    response = web.HTTPSeeOther(next_path)
    set_cookie(request, response, COOKIE, token, int(settings.console_session_lifetime))
    response.del_cookie(SIGN_IN_COOKIE, path="/console")
    raise response


@PAGES.page("POST", "/sign-out", portal=False)
async def sign_out(view: View) -> web.StreamResponse:
    await sessions.end(view.db.pool, view.session)
    response = web.HTTPSeeOther("/console/sign-in")
    response.del_cookie(COOKIE, path="/console")
    raise response


@PAGES.page("GET", "")
async def home(view: View) -> web.StreamResponse:
    """The first section the key may see (a key for sending only starts at its definitions)."""
    first = next((path for path, _, scope in NAV if view.session.may(scope)), None)
    if first is None:
        raise Forbidden("this key may see nothing in the console")
    view.redirect(first)


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC:
        return error_page(request, 404, "not found")
    data = resources.files("dispatcher.api.console").joinpath("static", name).read_bytes()
    response = web.Response(body=data, content_type=STATIC[name], charset="utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def portal_home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(f"/portal/{request.match_info['token']}/callbacks")


def setup(app: web.Application) -> None:
    app.router.add_get("/console/sign-in", sign_in_page)
    app.router.add_post("/console/sign-in", sign_in)
    app.router.add_get("/console/static/{name}", static)
    app.router.add_get("/portal/{token}", portal_home)
