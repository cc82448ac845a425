"""Callbacks in the console, and in the portal an app embeds for its own customers: the list with each
callback's health, a new callback (its signing secret shown once), the ownership handshake, a callback's
page (health, latency percentiles, deliveries, the attempt log) and its actions: retry, recover a window,
rotate the secret, pause and resume, send a test event, change its delivery controls (signature scheme,
ordering, rate limit). The forms are checked by the JSON API's own models (CallbackIn, CallbackPatch) and
saved by the same domain functions, so a rule holds the same in both.

Every page is a portal page too. A portal link reaches only its callbacks: `_callback` loads one within
the account AND the session's reach, and every page and action on a callback goes through it, so a
callback outside the link answers 404 as if it did not exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from dispatcher import callbacks, events, handshake, ids, sessions
from dispatcher.api.callbacks import CallbackIn, CallbackPatch, handshaker, send_verification
from dispatcher.api.console.pages import PAGES, View
from dispatcher.api.keys import KEYRING, SETTINGS
from dispatcher.delivery import history, outbound
from dispatcher.errors import DispatcherError, Forbidden, InvalidRequest, NotFound

MANAGE = "callbacks:manage"
RECENT = 50  # deliveries and attempts shown on a callback's page
WINDOWS = {"1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
BUCKETS = 48  # points of the latency chart over its window
SUBSCRIBABLE = events.EVENT_TYPES
DONE = {
    "verified": "The callback is verified: events flow to it now.",
    "resent": "A new verification key was sent.",
    "paused": "Paused: deliveries wait in the queue until you resume.",
    "resumed": "Resumed: waiting deliveries are sent now.",
    "retried": "The delivery is queued to be sent again now.",
    "test": "A test event is on its way.",
    "controls": "Delivery controls saved.",
}


def _may_read(view: View) -> None:
    """A callback's pages show to a key that manages callbacks or reads events (which then sees no buttons)."""
    if not (view.session.may(MANAGE) or view.session.may("events:read")):
        raise Forbidden(f"this key lacks the {MANAGE} scope")


async def _callback(view: View, callback_id: str) -> asyncpg.Record:
    """The callback, if it is this account's and within the session's reach (a portal link's callbacks);
    otherwise 404, the same answer as for a callback that does not exist."""
    number = ids.decode("cb", callback_id, "callback")
    if not view.session.reaches(number):
        raise NotFound("no such callback")
    async with view.db.pool.acquire() as conn:
        return await callbacks.get_callback(conn, view.session.account_id, callback_id)


def _cb_path(row: asyncpg.Record, tail: str = "") -> str:
    return f"/callbacks/{ids.encode('cb', row['id'])}{tail}"


@dataclass(frozen=True)
class Health:
    requests: int
    succeeded: int
    last_failure_at: datetime | None
    last_failure: str | None

    @property
    def rate(self) -> str:
        return f"{100 * self.succeeded / self.requests:.1f} %" if self.requests else "—"


def _health(row: asyncpg.Record | None) -> Health:
    if row is None:
        return Health(0, 0, None, None)
    code, error = row["last_failure_code"], row["last_failure_error"]
    failure = error or (f"HTTP {code}" if code is not None else None)
    return Health(row["requests"], row["succeeded"], row["last_failure_at"], failure)


# --- the latency chart ---------------------------------------------------------------------------------

W, H, LEFT, BOTTOM, TOP = 720, 240, 56, 28, 12
SERIES = (("p50", "#2450d6"), ("p90", "#9a5b00"), ("p99", "#b3261e"))


@dataclass(frozen=True)
class Series:
    label: str
    colour: str
    points: str  # SVG polyline points
    dots: list[tuple[float, float, str]]  # (x, y, what it shows), for a lone point and a tooltip


@dataclass(frozen=True)
class Chart:
    series: list[Series]
    rows: list[tuple[datetime, int, list[float]]]  # the text alternative: bucket, requests, [p50, p90, p99]
    y_ticks: list[tuple[float, str]]  # (y, label)
    x_ticks: list[tuple[float, str, str]]  # (x, label, text-anchor)
    width: int = W
    height: int = H
    left: int = LEFT


def _chart(points: list[asyncpg.Record], since: datetime, until: datetime) -> Chart:
    rows = [(p["bucket"], p["requests"], [round(v, 1) for v in p["p"]]) for p in points]
    y_max = max((r[2][2] for r in rows), default=0.0) or 1.0
    span = (until - since).total_seconds()

    def x(t: datetime) -> float:
        return LEFT + (W - LEFT - 8) * min(max((t - since).total_seconds(), 0.0), span) / span

    def y(v: float) -> float:
        return TOP + (H - TOP - BOTTOM) * (1 - v / y_max)

    fmt = "%H:%M" if span <= 86400 else "%m-%d %H:%M"
    series = []
    for i, (label, colour) in enumerate(SERIES):
        xy = [(x(t), y(ps[i]), f"{label} {t.strftime(fmt)}: {ps[i]} ms") for t, _, ps in rows]
        series.append(Series(label, colour, " ".join(f"{a:.1f},{b:.1f}" for a, b, _ in xy), xy))
    y_ticks = [(y(y_max * f), f"{y_max * f:.0f} ms") for f in (0, 0.5, 1)]
    x_ticks = [
        (x(since + (until - since) * f), (since + (until - since) * f).strftime(fmt), anchor)
        for f, anchor in ((0, "start"), (0.5, "middle"), (1, "end"))
    ]
    return Chart(series, rows, y_ticks, x_ticks)


# --- pages ---------------------------------------------------------------------------------------------


@PAGES.page("GET", "/callbacks", portal=True)
async def callbacks_page(view: View) -> web.StreamResponse:
    _may_read(view)
    account = view.session.account_id
    async with view.db.pool.acquire() as conn:
        rows = [r for r in await callbacks.list_callbacks(conn, account) if view.session.reaches(r["id"])]
        health = await history.callback_health(
            conn, account, [r["id"] for r in rows], datetime.now(UTC) - timedelta(hours=24)
        )
    items = [(r, _health(health.get(r["id"]))) for r in rows]
    return view.render("callbacks.html", active="/callbacks", items=items, paused=callbacks.is_paused)


@PAGES.page("GET", "/callbacks/new", scope=MANAGE, portal=True)
async def new_callback_page(view: View) -> web.StreamResponse:
    return _new_form(view)


def _new_form(
    view: View, error: str | None = None, status: int = 200, field: str | None = None, **values: Any
) -> web.Response:
    """`field`: the one `error` is about, marked and explained beside it as well."""
    return view.render(
        "callback_new.html", status=status, active="/callbacks", types=SUBSCRIBABLE, error=error, values=values,
        errors={field: error} if error and field else {},
    )  # fmt: skip


CONTROLS = ("signature", "ordering", "perSecond", "burst")  # the delivery controls' form fields


def _typed_controls(view: View) -> dict[str, str]:
    return {name: view.field(name) for name in CONTROLS}


def _number(text: str, field: str, kind: type[float] | type[int]) -> float | int:
    try:
        value = kind(text)
        if math.isfinite(value):  # not nan or inf; an int too large for a float overflows
            return value
    except (ValueError, OverflowError):
        pass
    raise InvalidRequest(f"{field}: not {'a whole number' if kind is int else 'a number'}", field=field)


def _controls(view: View) -> dict[str, Any]:
    """The delivery controls in the form, as the API's body names them: only those the form has (an
    empty requests-per-second field is no rate limit)."""
    assert view.form is not None
    body: dict[str, Any] = {name: view.field(name) for name in ("signature", "ordering") if name in view.form}
    if "perSecond" in view.form:
        per_second, burst = view.field("perSecond"), view.field("burst")
        if not per_second and burst:
            raise InvalidRequest("rateLimit.perSecond: give the requests per second too", field="rateLimit.perSecond")
        body["rateLimit"] = {
            "perSecond": _number(per_second, "rateLimit.perSecond", float),
            "burst": _number(burst, "rateLimit.burst", int) if burst else None,
        } if per_second else None  # fmt: skip
    return body


def _validated(model: type[CallbackIn] | type[CallbackPatch], body: dict[str, Any]) -> Any:
    """The form's fields checked by the API's model: the first refusal as the error, named after its field
    as the API names it (`rateLimit.perSecond`)."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"{field}: {first['msg']}" if field else first["msg"], field=field) from None


def _rate_text(value: float | None) -> str:
    """A rate as typed: 2, 0.5, 1234.5678 (never rounded, never 2.0)."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@PAGES.page("POST", "/callbacks", scope=MANAGE, portal=True)
async def create_callback(view: View) -> web.StreamResponse:
    assert view.form is not None
    values = {"name": view.field("name"), "url": view.field("url"), "description": view.field("description")}
    values.update(_typed_controls(view))
    chosen = [t for t in view.form.getall("type", []) if t in SUBSCRIBABLE]
    every = not chosen  # none chosen: every message event
    try:
        fields = {"name": values["name"], "url": values["url"], "description": values["description"] or None}
        body: CallbackIn = _validated(CallbackIn, {**fields, **_controls(view)})
        settings = view.app[SETTINGS]
        await outbound.check_url(body.url, allow_http=settings.allow_http_callbacks, allowed=settings.allowed_networks)
        async with view.db.pool.acquire() as conn, conn.transaction():
            row, secret, key = await callbacks.create_callback(
                conn, view.app[KEYRING], view.session.account_id, name=body.name, url=body.url,
                description=body.description, max_batch_size=1, lease=handshake.lease(settings),
                signature=body.signature, ordering=body.ordering,
                rate=body.rateLimit.model_dump() if body.rateLimit else None,
            )  # fmt: skip
            # A callback receives nothing without a subscription: one with the chosen types, named after
            # the callback's id (unique: a portal's customer never trips over the account's other names).
            cb_id = ids.encode("cb", row["id"])
            await callbacks.create_subscription(
                conn, view.session.account_id, name=f"{cb_id} {body.name}"[:100], callback_id=cb_id,
                event_types=["*"] if every else chosen, filters={}, status="active",
            )  # fmt: skip
            if view.portal:
                await sessions.add_callback(conn, view.session, row["id"])
    except DispatcherError as err:  # the form again, as filled in, with what to fix
        return _new_form(view, err.message, err.status, err.field, chosen=chosen, **values)
    send_verification(view.app, row, key)
    # Rendered, not redirected: the secret is shown this once and never lands in a URL or the history.
    return await _detail(view, row, secret=secret, notice="Callback created. A verification request is on its way.")


async def _detail_refused(view: View, row: asyncpg.Record, err: DispatcherError) -> web.Response:
    """The callback's page again with the delivery controls as typed and what to fix beside the field."""
    return await _detail(
        view, row, status=err.status, controls=_typed_controls(view), controls_error=err.message,
        errors={err.field or "form": err.message},
    )  # fmt: skip


@PAGES.page("GET", "/callbacks/{callbackId}", portal=True)
async def callback_page(view: View) -> web.StreamResponse:
    _may_read(view)
    row = await _callback(view, view.request.match_info["callbackId"])
    query = view.request.query
    notice = DONE.get(query.get("done", ""))
    if query.get("recovered", "").isdigit():
        count = int(query["recovered"])
        notice = f"{count} failed deliver{'y' if count == 1 else 'ies'} queued again."
    return await _detail(view, row, notice=notice)


async def _detail(view: View, row: asyncpg.Record, **context: Any) -> web.Response:
    window = view.request.query.get("window", "24h")
    if window not in WINDOWS:
        window = "24h"
    until = datetime.now(UTC)
    since = until - WINDOWS[window]
    account = view.session.account_id
    async with view.db.pool.acquire() as conn:
        health = await history.callback_health(conn, account, [row["id"]], since)
        points = await history.callback_latency(
            conn, account, row["id"], since=since, until=until, bucket=WINDOWS[window].total_seconds() / BUCKETS
        )
        deliveries = await history.recent_deliveries(conn, account, row["id"], RECENT)
        attempts = await history.recent_attempts(conn, account, row["id"], RECENT)
        (shown,) = await callbacks.callbacks_json(conn, view.app[KEYRING], [row])  # its public keys (v1a)
    rate = shown["rateLimit"]
    context.setdefault("errors", {})
    context.setdefault("controls", {
        "signature": row["signature"], "ordering": row["ordering"],
        "perSecond": _rate_text(rate["perSecond"]) if rate else "", "burst": str(rate["burst"]) if rate else "",
    })  # fmt: skip
    return view.render(
        "callback.html", active="/callbacks", cb=row, cb_id=ids.encode("cb", row["id"]),
        health=_health(health.get(row["id"])), chart=_chart(points, since, until), window=window,
        windows=list(WINDOWS), deliveries=[history.delivery_json(d) for d in deliveries],
        attempts=[history.attempt_json(a) for a in attempts], verification=callbacks.verification_json(row),
        paused=callbacks.is_paused(row), test_types=events.MESSAGE_EVENT_TYPES, public_key=shown["publicKey"],
        previous_public_key=shown["previousPublicKey"], ordering=shown["ordering"],
        rate_limit=f"{_rate_text(rate['perSecond'])} per second, burst {rate['burst']}" if rate else None, **context,
    )  # fmt: skip


@PAGES.page("GET", "/callbacks/{callbackId}/deliveries", portal=True)
async def deliveries_fragment(view: View) -> web.StreamResponse:
    """Only the deliveries table: what a live page re-fetches when outcomes arrive (data-live-refresh)."""
    _may_read(view)
    row = await _callback(view, view.request.match_info["callbackId"])
    async with view.db.pool.acquire() as conn:
        deliveries = await history.recent_deliveries(conn, view.session.account_id, row["id"], RECENT)
    return view.render(
        "callback_deliveries.html", cb=row, cb_id=ids.encode("cb", row["id"]),
        deliveries=[history.delivery_json(d) for d in deliveries],
    )  # fmt: skip


@PAGES.page("GET", "/callbacks/{callbackId}/attempts/{attemptId}", portal=True)
async def attempt_page(view: View) -> web.StreamResponse:
    _may_read(view)
    row = await _callback(view, view.request.match_info["callbackId"])
    account = view.session.account_id
    async with view.db.pool.acquire() as conn:
        attempt = await history.callback_attempt(conn, account, row["id"], view.request.match_info["attemptId"])
        request = await _request_shown(conn, account, row, attempt)
    return view.render(
        "callback_attempt.html", active="/callbacks", cb=row, cb_id=ids.encode("cb", row["id"]),
        attempt=history.attempt_json(attempt), request=request,
    )  # fmt: skip


async def _request_shown(
    conn: asyncpg.Connection, account: int, cb: asyncpg.Record, attempt: asyncpg.Record
) -> tuple[str, dict[str, str], str] | None:
    """(body, headers, delivery id) of the request as the worker built it, for a request that carried one
    delivery; None for a batch, or once retention dropped its event."""
    webhook_id = attempt["webhook_id"] or ""
    if not webhook_id.startswith("dlv_"):
        return None
    try:
        delivery, _ = await history.delivery_with_attempts(conn, account, webhook_id)
    except NotFound:
        return None
    if delivery["callback_id"] != cb["id"]:
        return None
    event = await history.delivery_event(conn, account, delivery)
    if event is None:
        return None
    body, headers = history.request_shown(event, webhook_id, attempt["started_at"])
    return body, headers, webhook_id


# --- actions -------------------------------------------------------------------------------------------


def _cb_id(view: View) -> str:
    return view.request.match_info["callbackId"]


@PAGES.page("POST", "/callbacks/{callbackId}/verify", scope=MANAGE, portal=True)
async def verify(view: View) -> web.StreamResponse:
    row = await _callback(view, _cb_id(view))
    key = view.field("verificationKey")
    if not key or len(key) > 200:
        raise InvalidRequest("paste the verificationKey your endpoint received", field="verificationKey")
    async with view.db.pool.acquire() as conn:
        await callbacks.verify(conn, view.session.account_id, ids.encode("cb", row["id"]), key)
    view.redirect(_cb_path(row), done="verified")


@PAGES.page("POST", "/callbacks/{callbackId}/verification", scope=MANAGE, portal=True)
async def resend_verification(view: View) -> web.StreamResponse:
    """A fresh key, sent now (as POST /v1/callbacks/{id}/verification); the page then shows its outcome."""
    row = await _callback(view, _cb_id(view))
    async with view.db.pool.acquire() as conn:
        row, key = await callbacks.new_verification(
            conn, view.app[KEYRING], view.session.account_id, ids.encode("cb", row["id"]),
            lease=handshake.lease(view.app[SETTINGS]),
        )  # fmt: skip
    if key is not None:
        await handshaker(view.app).attempt(handshake.Pending(row["id"], row["url"], key, row["verification_attempts"]))
    view.redirect(_cb_path(row), done="resent" if key else "verified")


def _new_key_notice(view: View, new: callbacks.NewKey) -> str:
    hours = view.app[SETTINGS].secret_rotation_grace / 3600
    what = "signing secret" if new.secret else f"key pair, public key {new.public_key}"  # v1a: no secret to show
    return f"New {what}. The old one keeps signing for {hours:g} hour{'s' if hours != 1 else ''}."


@PAGES.page("POST", "/callbacks/{callbackId}/rotate", scope=MANAGE, portal=True)
async def rotate(view: View) -> web.StreamResponse:
    row = await _callback(view, _cb_id(view))
    grace = view.app[SETTINGS].secret_rotation_grace
    async with view.db.pool.acquire() as conn:
        new = await callbacks.rotate_secret(conn, view.app[KEYRING], view.session.account_id, _cb_id(view), grace)
    # Rendered, not redirected: the new secret is shown this once.
    return await _detail(view, row, secret=new.secret, notice=_new_key_notice(view, new))


@PAGES.page("POST", "/callbacks/{callbackId}/controls", scope=MANAGE, portal=True)
async def save_controls(view: View) -> web.StreamResponse:
    """Signature scheme, ordering and rate limit, as PATCH /v1/callbacks/{id} changes them: another scheme
    makes a new key (a v1 secret is shown this once), the old one signing on for the grace period."""
    current = await _callback(view, _cb_id(view))
    cb_id = ids.encode("cb", current["id"])
    settings = view.app[SETTINGS]
    try:
        changes = _validated(CallbackPatch, _controls(view)).model_dump(exclude_unset=True)
        async with view.db.pool.acquire() as conn, conn.transaction():
            row, _ = await callbacks.update_callback(
                conn, view.app[KEYRING], view.session.account_id, cb_id, changes, lease=handshake.lease(settings)
            )
            row, new = await callbacks.switch_signature(
                conn, view.app[KEYRING], row, changes.get("signature"), settings.secret_rotation_grace
            )
    except DispatcherError as err:
        return await _detail_refused(view, current, err)
    if new is None:
        view.redirect(_cb_path(row), done="controls")
    # Rendered, not redirected: a new v1 secret is shown this once.
    return await _detail(view, row, secret=new.secret, notice=f"{DONE['controls']} {_new_key_notice(view, new)}")


async def _pause(view: View, paused: bool) -> web.StreamResponse:
    row = await _callback(view, _cb_id(view))
    async with view.db.pool.acquire() as conn, conn.transaction():
        await callbacks.set_paused(conn, view.session.account_id, ids.encode("cb", row["id"]), paused)
    view.redirect(_cb_path(row), done="paused" if paused else "resumed")


@PAGES.page("POST", "/callbacks/{callbackId}/pause", scope=MANAGE, portal=True)
async def pause(view: View) -> web.StreamResponse:
    return await _pause(view, True)


@PAGES.page("POST", "/callbacks/{callbackId}/resume", scope=MANAGE, portal=True)
async def resume(view: View) -> web.StreamResponse:
    return await _pause(view, False)


@PAGES.page("POST", "/callbacks/{callbackId}/test", scope=MANAGE, portal=True)
async def send_test(view: View) -> web.StreamResponse:
    row = await _callback(view, _cb_id(view))
    type_ = view.field("type", "delivered")
    if type_ not in events.MESSAGE_EVENT_TYPES:
        raise InvalidRequest("choose a message event type", field="type")
    async with view.db.pool.acquire() as conn:
        await callbacks.send_test_event(conn, view.session.account_id, ids.encode("cb", row["id"]), type_)
    view.redirect(_cb_path(row), done="test")


def _when(view: View, name: str, *, required: bool) -> datetime | None:
    """A datetime-local field, read as UTC."""
    value = view.field(name)
    if not value:
        if required:
            raise InvalidRequest(f"give the window's {name}", field=name)
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name}: not a date and time", field=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@PAGES.page("POST", "/callbacks/{callbackId}/recover", scope=MANAGE, portal=True)
async def recover(view: View) -> web.StreamResponse:
    row = await _callback(view, _cb_id(view))
    since, until = _when(view, "since", required=True), _when(view, "until", required=False)
    assert since is not None
    async with view.db.pool.acquire() as conn:
        count = await history.recover(conn, view.session.account_id, row["id"], since, until)
    view.redirect(_cb_path(row), recovered=str(count))


@PAGES.page("POST", "/callbacks/{callbackId}/deliveries/{deliveryId}/retry", scope=MANAGE, portal=True)
async def retry(view: View) -> web.StreamResponse:
    row = await _callback(view, _cb_id(view))
    delivery_id = view.request.match_info["deliveryId"]
    async with view.db.pool.acquire() as conn:
        delivery = await history.get_delivery(conn, view.session.account_id, delivery_id)
        if delivery["callbackId"] != ids.encode("cb", row["id"]):
            raise NotFound("no such delivery")  # another callback's: perhaps outside this portal link
        await history.retry(conn, view.session.account_id, delivery_id)
    view.redirect(_cb_path(row), done="retried")
