"""The console's page machinery: a route table for HTML pages mounted under /console (a signed-in
session, by cookie) and, for pages a portal may show, under /portal/{token} (a portal link's session,
by URL), with CSRF checks on every state change, security headers, and autoescaping templates.

A page handler receives a `View`: the request, the session, the validated form of a POST, and helpers
to render a template or redirect within the same base (console or portal).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NoReturn
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from dispatcher import sessions
from dispatcher.api.keys import DB, SETTINGS
from dispatcher.errors import DispatcherError, Forbidden, InvalidRequest, NotFound
from dispatcher.sessions import Session

COOKIE = "dispatcher_console"
SIGN_IN_COOKIE = "dispatcher_sign_in"
MAX_FORM_BYTES = 256 * 1024
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

# A definition's preview draws the rendered mail in a sandboxed srcdoc frame, which inherits the page's
# policy: mail is styled inline, so that page alone allows inline styles. Scripts stay refused (and the
# frame's sandbox forbids them anyway); remote images stay blocked, as in a careful mail client.
PREVIEW_CSP = CONSOLE_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")

Page = Callable[["View"], Awaitable[web.StreamResponse]]

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("dispatcher.api.console", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _safe_href(value: Any) -> str:
    """Only http(s) and relative links become hrefs; anything else (javascript:, data:) is dropped."""
    text = str(value or "")
    return text if text.startswith(("https://", "http://", "/")) and not text.startswith("//") else "#"


TEMPLATES.filters["href"] = _safe_href
# The console's sections: (path, label, the scope a key needs to see it). A portal shows callbacks only.
NAV = (
    ("/overview", "Overview", "events:read"),
    ("/messages", "Messages", "events:read"),
    ("/callbacks", "Callbacks", "callbacks:manage"),
    ("/subscriptions", "Subscriptions", "callbacks:manage"),
    ("/definitions", "Definitions", "messages:send"),
    ("/sends", "Sends", "messages:send"),
    ("/keys", "API keys", "*"),
    ("/live", "Live", "events:read"),
)
TEMPLATES.globals["NAV"] = NAV


@dataclass
class View:
    request: web.Request
    session: Session
    base: str  # /console or /portal/{token}
    form: MultiDictProxy[str] | None = None

    @property
    def app(self) -> web.Application:
        return self.request.app

    @property
    def db(self) -> Any:
        return self.request.app[DB]

    @property
    def portal(self) -> bool:
        return self.session.kind == "portal"

    def url(self, path: str, **query: Any) -> str:
        """A link within this console or portal; empty query values are left out."""
        kept = {k: v for k, v in query.items() if v not in (None, "")}
        return self.base + path + ("?" + urlencode(kept, doseq=True) if kept else "")

    def field(self, name: str, default: str = "") -> str:
        return (self.form.get(name, default) if self.form is not None else default).strip()

    def require(self, scope: str) -> None:
        if not self.session.may(scope):
            raise Forbidden(f"this key lacks the {scope} scope")

    def render(self, template: str, status: int = 200, *, csp: str | None = None, **context: Any) -> web.Response:
        body = TEMPLATES.get_template(template).render(view=self, session=self.session, **context)
        return html(self.request, body, status, csp)

    def redirect(self, path: str, **query: Any) -> NoReturn:
        """After a state change: see the result with a GET (a reload does not repeat the change)."""
        raise web.HTTPSeeOther(self.url(path, **query))


@dataclass
class Pages:
    """The console's page table: each page is mounted under /console, and portal pages under
    /portal/{token} as well."""

    pages: list[tuple[str, str, Page, str | None, bool]] = field(default_factory=list)

    def page(self, method: str, path: str, *, scope: str | None = None, portal: bool = False) -> Callable[[Page], Page]:
        def register(handler: Page) -> Page:
            self.pages.append((method, path, handler, scope, portal))
            return handler

        return register


def security_headers(response: web.StreamResponse, csp: str) -> None:
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"  # a portal link's token never leaves for another site
    response.headers["Cache-Control"] = "no-store"
    if "frame-ancestors 'none'" in csp:
        response.headers["X-Frame-Options"] = "DENY"


def portal_csp(request: web.Request) -> str:
    ancestors = request.app[SETTINGS].portal_frame_ancestors
    return CONSOLE_CSP.replace("frame-ancestors 'none'", f"frame-ancestors {ancestors}")


def html(request: web.Request, body: str, status: int = 200, csp: str | None = None) -> web.Response:
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    security_headers(response, csp or (portal_csp(request) if request.path.startswith("/portal/") else CONSOLE_CSP))
    return response


def error_page(request: web.Request, status: int, message: str, base: str | None = None) -> web.Response:
    body = TEMPLATES.get_template("error.html").render(status=status, message=message, base=base)
    return html(request, body, status)


def secure_cookies(request: web.Request) -> bool:
    """Cookies are Secure when the console is reached over https (directly, behind a proxy that says so,
    or when DISPATCHER_PUBLIC_URL is https)."""
    public = request.app[SETTINGS].public_url or ""
    return request.secure or request.headers.get("X-Forwarded-Proto") == "https" or public.startswith("https://")


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/console", httponly=True, samesite="Strict",
        secure=secure_cookies(request),
    )  # fmt: skip


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise InvalidRequest("a form is expected")
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise InvalidRequest("the form is too large")
    form = await request.post()
    return MultiDictProxy(MultiDict((k, v) for k, v in form.items() if isinstance(v, str)))


def same_origin(request: web.Request) -> bool:
    """A state change comes from our own pages: the browser says so (Sec-Fetch-Site), or its Origin names
    this host. A client that sends neither is no browser, and the CSRF token still has to match."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin != "null" and origin.split("://", 1)[-1].split("/", 1)[0] == request.host


def check_csrf(request: web.Request, session: Session, form: Mapping[str, str]) -> None:
    token = form.get("csrf", "")
    if not (hmac.compare_digest(token.encode(), session.csrf_token.encode()) and same_origin(request)):
        raise Forbidden("the form expired or came from another site; reload the page and try again")


async def console_session(request: web.Request) -> Session | None:
    settings = request.app[SETTINGS]
    token = request.cookies.get(COOKIE, "")
    idle = timedelta(seconds=settings.console_idle_timeout)
    return await sessions.resume(request.app[DB].pool, token, kind="console", idle=idle) if token else None


async def portal_session(request: web.Request) -> Session | None:
    idle = timedelta(seconds=request.app[SETTINGS].console_idle_timeout)
    return await sessions.resume(request.app[DB].pool, request.match_info["token"], kind="portal", idle=idle)


def _wrap(handler: Page, scope: str | None, portal: bool) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        if portal:
            base = "/portal/" + request.match_info["token"]
            session = await portal_session(request)
            if session is None:
                return error_page(request, 401, "This portal link has expired. Ask for a new one.")
        else:
            base = "/console"
            session = await console_session(request)
            if session is None:
                if request.method == "GET":
                    next_path = request.path_qs if request.path_qs.startswith("/console") else "/console"
                    raise web.HTTPSeeOther("/console/sign-in?" + urlencode({"next": next_path}))
                return error_page(request, 401, "Your session has ended. Sign in again.")
        view = View(request, session, base)
        try:
            if request.method == "POST":
                view.form = await read_form(request)
                check_csrf(request, session, view.form)
            if scope is not None:
                view.require(scope)
            return await handler(view)
        except DispatcherError as err:
            return error_page(request, err.status, err.message, base)

    handle.__name__ = handler.__name__
    return handle


def mount(app: web.Application, pages: Pages) -> None:
    for method, path, handler, scope, portal in pages.pages:
        app.router.add_route(method, "/console" + path, _wrap(handler, scope, False))
        if portal:
            app.router.add_route(method, "/portal/{token}" + path, _wrap(handler, scope, True))


def not_found(what: str) -> NotFound:
    return NotFound(f"no such {what}")


def new_sign_in_token() -> str:
    return secrets.token_urlsafe(24)


PAGES = Pages()
