"""Subscriptions in the console: list, create, edit, pause and resume, delete. Forms are checked by the
JSON API's own models (api/callbacks.py SubscriptionIn / SubscriptionPatch) and saved by the functions the
API calls (callbacks.create_subscription / update_subscription, which check and compile the filter), so a
rule holds the same in both; a refused form comes back with its errors beside the fields and what the
person typed. The filter is one JSON field in the syntax of docs/filters.md."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from dispatcher import callbacks, events, ids, jsontext
from dispatcher.api.callbacks import SubscriptionIn, SubscriptionPatch
from dispatcher.api.console.pages import PAGES, View
from dispatcher.api.routing import MAX_DEPTH, check_storable
from dispatcher.errors import Conflict, DispatcherError, InvalidRequest, NotFound
from dispatcher.sending.models import field_errors

SCOPE = "callbacks:manage"
EVENT_TYPES = ("*", *events.EVENT_TYPES)
DONE = {
    "created": "The subscription was created.",
    "saved": "The subscription was saved.",
    "paused": "The subscription is paused: events are no longer delivered through it.",
    "resumed": "The subscription is active again.",
    "deleted": "The subscription was deleted.",
}


def _form_field(field: str) -> str:
    """The form field an API error belongs to: `eventTypes[1]` is eventTypes, `filters.$or[1].data.total.$gtt`
    is filters (the whole filter is one field here)."""
    return field.split("[")[0].split(".")[0]


def form_errors(exc: ValidationError) -> dict[str, str]:
    """Field → message, the field named as the API names it (`eventTypes[1] must be one of ...`)."""
    errors: dict[str, str] = {}
    for err in field_errors(exc):
        errors.setdefault(_form_field(err.field), f"{err.field or 'form'} {err.message}")
    return errors


def refused(err: DispatcherError) -> dict[str, str]:
    """A refusal from callbacks.py beside its field: a filter's names the path at fault, as the API's `field`."""
    if isinstance(err, InvalidRequest) and err.field:
        return {_form_field(err.field): f"{err.field} {err.message}"}
    return {err.field or "name": err.message}


def _typed(view: View) -> dict[str, Any]:
    """The form as typed, to show again when it is refused."""
    assert view.form is not None
    return {
        "name": view.field("name"),
        "callbackId": view.field("callbackId"),
        "eventTypes": [t for t in view.form.getall("eventTypes", []) if t],
        "filters": view.field("filters"),
    }


def _filters(text: str) -> Any:
    """The Filter field's JSON, read as the API reads a body (same parser, same storable check): empty is {}.
    What it holds is checked by the API's model and compiled by callbacks.py, as a request's `filters` is."""
    try:
        value = jsontext.loads(text) if text else {}
    except ValueError as exc:  # orjson.JSONDecodeError is one, and so is an integer too long to convert
        raise InvalidRequest(f"is not valid JSON: {exc}", field="filters", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest(f"is nested deeper than {MAX_DEPTH} levels", field="filters", code="too_deep") from None
    check_storable(value, "filters", 1)
    return value


def pretty(filters: dict[str, Any]) -> str:
    """A stored filter as the Filter field shows it: indented JSON, empty when there is none."""
    return json.dumps(filters, indent=2, ensure_ascii=False) if filters else ""


async def _list(view: View, status: int = 200, **context: Any) -> web.Response:
    async with view.db.pool.acquire() as conn:
        rows = await callbacks.list_subscriptions(conn, view.session.account_id, None)
        hooks = await callbacks.list_callbacks(conn, view.session.account_id)
    names = {ids.encode("cb", c["id"]): c["name"] for c in hooks}
    subs = [
        {**callbacks.subscription_json(r), "callbackName": names.get(ids.encode("cb", r["callback_id"]))} for r in rows
    ]
    for sub in subs:
        sub["filterText"] = json.dumps(sub["filters"], ensure_ascii=False) if sub["filters"] else ""
    context.setdefault("typed", {"eventTypes": []})
    return view.render(
        "subscriptions.html", status, active="/subscriptions", subscriptions=subs, hooks=names,
        event_types=EVENT_TYPES, errors=context.pop("errors", {}), **context,
    )  # fmt: skip


@PAGES.page("GET", "/subscriptions", scope=SCOPE)
async def subscriptions_page(view: View) -> web.StreamResponse:
    return await _list(view, notice=DONE.get(view.request.query.get("done", "")))


@PAGES.page("POST", "/subscriptions", scope=SCOPE)
async def create_subscription(view: View) -> web.StreamResponse:
    typed = _typed(view)
    try:
        body = {"name": typed["name"], "callbackId": typed["callbackId"], "eventTypes": typed["eventTypes"],
                "filters": _filters(typed["filters"]), "status": "active"}  # fmt: skip
        sub = SubscriptionIn.model_validate(body)
        async with view.db.pool.acquire() as conn:
            await callbacks.create_subscription(
                conn, view.session.account_id, name=sub.name, callback_id=sub.callbackId,
                event_types=sub.eventTypes, filters=sub.filters, status=sub.status,
            )  # fmt: skip
    except ValidationError as exc:
        return await _list(view, 400, typed=typed, errors=form_errors(exc))
    except (Conflict, InvalidRequest) as err:
        return await _list(view, err.status, typed=typed, errors=refused(err))
    except NotFound as err:  # the callback chosen was deleted meanwhile
        return await _list(view, err.status, typed=typed, errors={"callbackId": err.message})
    view.redirect("/subscriptions", done="created")


def _sub_id(view: View) -> str:
    return view.request.match_info["subscriptionId"]


async def _edit(view: View, status: int = 200, **context: Any) -> web.Response:
    async with view.db.pool.acquire() as conn:
        row = await callbacks.get_subscription(conn, view.session.account_id, _sub_id(view))
        hook = await callbacks.get_callback(conn, view.session.account_id, ids.encode("cb", row["callback_id"]))
    sub = callbacks.subscription_json(row)
    context.setdefault(
        "typed", {"name": sub["name"], "eventTypes": sub["eventTypes"], "filters": pretty(sub["filters"])}
    )
    return view.render(
        "subscription.html", status, active="/subscriptions", sub=sub, hook_name=hook["name"],
        event_types=EVENT_TYPES, errors=context.pop("errors", {}), **context,
    )  # fmt: skip


@PAGES.page("GET", "/subscriptions/{subscriptionId}", scope=SCOPE)
async def subscription_page(view: View) -> web.StreamResponse:
    return await _edit(view)


@PAGES.page("POST", "/subscriptions/{subscriptionId}", scope=SCOPE)
async def save_subscription(view: View) -> web.StreamResponse:
    typed = _typed(view)
    try:
        body = {"name": typed["name"], "eventTypes": typed["eventTypes"], "filters": _filters(typed["filters"])}
        changes = SubscriptionPatch.model_validate(body).model_dump(exclude_unset=True)
        async with view.db.pool.acquire() as conn:
            await callbacks.update_subscription(conn, view.session.account_id, _sub_id(view), changes)
    except ValidationError as exc:
        return await _edit(view, 400, typed=typed, errors=form_errors(exc))
    except (Conflict, InvalidRequest) as err:
        return await _edit(view, err.status, typed=typed, errors=refused(err))
    view.redirect("/subscriptions", done="saved")


async def _set_status(view: View, status: str, done: str) -> web.StreamResponse:
    async with view.db.pool.acquire() as conn:
        await callbacks.update_subscription(conn, view.session.account_id, _sub_id(view), {"status": status})
    view.redirect("/subscriptions", done=done)


@PAGES.page("POST", "/subscriptions/{subscriptionId}/pause", scope=SCOPE)
async def pause_subscription(view: View) -> web.StreamResponse:
    return await _set_status(view, "paused", "paused")


@PAGES.page("POST", "/subscriptions/{subscriptionId}/resume", scope=SCOPE)
async def resume_subscription(view: View) -> web.StreamResponse:
    return await _set_status(view, "active", "resumed")


@PAGES.page("POST", "/subscriptions/{subscriptionId}/delete", scope=SCOPE)
async def delete_subscription(view: View) -> web.StreamResponse:
    async with view.db.pool.acquire() as conn:
        await callbacks.delete_subscription(conn, view.session.account_id, _sub_id(view))
    view.redirect("/subscriptions", done="deleted")
