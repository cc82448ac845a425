"""Send definitions in the console: list, create, edit with the Liquid syntax check, preview with sample
attributes, activate and deactivate. Forms are checked by the send API's own models (sending/models.py
DefinitionCreate / DefinitionPatch, with its Liquid check of every template field) and template limits,
so a definition the console saves is one the API would save; a refused form comes back with the error
beside its field (named as the API names it, e.g. content.html) and everything the person typed.

A preview renders in a sandbox process like the sender's (sending/preview.py). The rendered HTML is
shown as escaped source, and drawn in an `<iframe sandbox srcdoc>`: no scripts, no same origin, and the
page's Content-Security-Policy, which the srcdoc document inherits, lets nothing load from elsewhere
(that page alone allows inline styles, as mail is styled: pages.PREVIEW_CSP)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from dispatcher.api.console.pages import PAGES, PREVIEW_CSP, View
from dispatcher.api.keys import SETTINGS
from dispatcher.errors import Conflict, InvalidRequest
from dispatcher.sending import preview, service
from dispatcher.sending.errors import TemplateError
from dispatcher.sending.models import DefinitionContent, DefinitionCreate, DefinitionPatch, field_errors
from dispatcher.sending.sandbox import RenderLimits

SCOPE = "messages:send"
CONTENT = ("from", "replyTo", "subject", "preheader", "html", "text")
OPTIONS = ("tracked", "disableMessageRetention", "sendToUnsubscribed")
MAX_ATTRIBUTES = 64 * 1024
DONE = {
    "created": "The definition was created.",
    "saved": "The definition was saved.",
    "activated": "The definition is active: sends that waited for it go out now.",
    "deactivated": "The definition is inactive: sends with it wait until it is active again.",
}


FIELDS = {"definitionKey", "name", "description", "status", *(f"content.{n}" for n in CONTENT)}


def _errors(exc: ValidationError, prefix: tuple[str, ...] = ()) -> dict[str, str]:
    """Field → message, the field named as the API names it (`content.html invalid Liquid template: ...`)."""
    errors: dict[str, str] = {}
    for err in field_errors(exc, prefix=prefix):
        field = err.field.split("[")[0] or "form"
        errors.setdefault(field if field in FIELDS else field.split(".")[0], f"{err.field} {err.message}")
    return errors


def _typed(view: View) -> dict[str, Any]:
    """The form as typed. Templates keep their whitespace; browsers send CRLF line ends, stored as LF."""
    assert view.form is not None
    typed: dict[str, Any] = {
        name: view.field(name) for name in ("definitionKey", "name", "description", "status", "previewTo",
                                            "previewContactKey")
    }  # fmt: skip
    for name in CONTENT:
        typed[f"content.{name}"] = view.form.get(f"content.{name}", "").replace("\r\n", "\n")
    for name in OPTIONS:
        typed[f"options.{name}"] = view.form.get(f"options.{name}") == "on"
    typed["attributes"] = view.form.get("attributes", "").replace("\r\n", "\n")
    return typed


def _stored(row: Any) -> dict[str, Any]:
    """A saved definition as the form shows it."""
    typed: dict[str, Any] = {"definitionKey": row["definition_key"], "name": row["name"],
                             "description": row["description"] or "", "status": row["status"]}  # fmt: skip
    for name in CONTENT:
        typed[f"content.{name}"] = row["content"].get(name, "")
    for name in OPTIONS:
        typed[f"options.{name}"] = bool(row["options"].get(name, name == "tracked"))
    return typed


def _content(typed: dict[str, Any]) -> dict[str, Any]:
    return {name: typed[f"content.{name}"] for name in CONTENT if typed[f"content.{name}"].strip()}


def _options(typed: dict[str, Any]) -> dict[str, bool]:
    return {name: typed[f"options.{name}"] for name in OPTIONS}


def _check_limits(view: View, content: DefinitionContent | None) -> None:
    service.check_template_limits(content, view.app[SETTINGS].render_max_value, "content.")


async def _list(view: View, status: int = 200, **context: Any) -> web.Response:
    async with view.db.pool.acquire() as conn:
        rows = await service.list_definitions(conn, view.session.account_id)
    context.setdefault("typed", {"status": "active", "options.tracked": True})
    return view.render(
        "definitions.html", status, active="/definitions", definitions=rows, content_fields=CONTENT,
        errors=context.pop("errors", {}), **context,
    )  # fmt: skip


@PAGES.page("GET", "/definitions", scope=SCOPE)
async def definitions_page(view: View) -> web.StreamResponse:
    return await _list(view, notice=DONE.get(view.request.query.get("done", "")))


@PAGES.page("POST", "/definitions", scope=SCOPE)
async def create_definition(view: View) -> web.StreamResponse:
    typed = _typed(view)
    body = {"definitionKey": typed["definitionKey"], "name": typed["name"], "status": typed["status"] or "active",
            "content": _content(typed), "options": _options(typed)}  # fmt: skip
    if typed["description"]:
        body["description"] = typed["description"]
    try:
        definition = DefinitionCreate.model_validate(body)
        _check_limits(view, definition.content)
        async with view.db.pool.acquire() as conn:
            row = await service.create_definition(
                conn, view.session.account_id, definition, view.app[SETTINGS].definition_quota
            )
    except ValidationError as exc:
        return await _list(view, 400, typed=typed, errors=_errors(exc))
    except (InvalidRequest, Conflict) as err:
        return await _list(view, err.status, typed=typed, errors={err.field or "form": err.message})
    view.redirect(f"/definitions/{row['definition_key']}", done="created")


def _key(view: View) -> str:
    return view.request.match_info["definitionKey"]


async def _edit(view: View, status: int = 200, **context: Any) -> web.Response:
    async with view.db.pool.acquire() as conn:
        row = await service.get_definition(conn, view.session.account_id, _key(view))
    typed = context.pop("typed", None) or _stored(row)
    typed.setdefault("attributes", "{}")
    return view.render(
        "definition.html", status, active="/definitions", definition=row, typed=typed, content_fields=CONTENT,
        errors=context.pop("errors", {}), **context,
    )  # fmt: skip


@PAGES.page("GET", "/definitions/{definitionKey}", scope=SCOPE)
async def definition_page(view: View) -> web.StreamResponse:
    return await _edit(view, notice=DONE.get(view.request.query.get("done", "")))


def _patch(typed: dict[str, Any]) -> DefinitionPatch:
    return DefinitionPatch.model_validate({
        "name": typed["name"], "description": typed["description"] or None, "content": _content(typed),
        "options": _options(typed),
    })  # fmt: skip


@PAGES.page("POST", "/definitions/{definitionKey}", scope=SCOPE)
async def save_definition(view: View) -> web.StreamResponse:
    typed = _typed(view)
    try:
        patch = _patch(typed)
        _check_limits(view, patch.content)
        async with view.db.pool.acquire() as conn:
            await service.update_definition(conn, view.session.account_id, _key(view), patch)
    except ValidationError as exc:
        return await _edit(view, 400, typed=typed, errors=_errors(exc))
    except (InvalidRequest, Conflict) as err:
        return await _edit(view, err.status, typed=typed, errors={err.field or "form": err.message})
    view.redirect(f"/definitions/{_key(view)}", done="saved")


def _attributes(text: str) -> dict[str, Any]:
    if len(text) > MAX_ATTRIBUTES:
        raise InvalidRequest(f"sample attributes must be at most {MAX_ATTRIBUTES // 1024} KB", field="attributes")
    try:
        value = json.loads(text or "{}")
    except ValueError as exc:
        raise InvalidRequest(f"sample attributes are not valid JSON: {exc}", field="attributes") from None
    if not isinstance(value, dict):
        raise InvalidRequest('sample attributes must be a JSON object, e.g. {"name": "Ada"}', field="attributes")
    return value


@PAGES.page("POST", "/definitions/{definitionKey}/preview", scope=SCOPE)
async def preview_definition(view: View) -> web.StreamResponse:
    """Render what the form holds (saved or not) with the sample attributes; nothing is stored."""
    typed = _typed(view)
    async with view.db.pool.acquire() as conn:
        await service.get_definition(conn, view.session.account_id, _key(view))  # 404 for another account's
    try:
        content = DefinitionContent.model_validate(_content(typed))
        _check_limits(view, content)
        attributes = _attributes(typed["attributes"])
    except ValidationError as exc:
        return await _edit(view, 400, typed=typed, errors=_errors(exc, ("content",)))
    except InvalidRequest as err:
        return await _edit(view, 400, typed=typed, errors={err.field or "form": err.message})
    s = view.app[SETTINGS]
    try:
        rendered = await preview.render_preview(
            content, attributes, to=typed["previewTo"] or "preview@example.com",
            contact_key=typed["previewContactKey"] or None,
            limits=RenderLimits(s.render_cpu_seconds, s.render_max_value, s.render_memory_mb),
        )  # fmt: skip
    except TemplateError as exc:
        return await _edit(view, 400, typed=typed, errors={"preview": exc.message})
    return await _edit(view, typed=typed, rendered=rendered, csp=PREVIEW_CSP)


async def _set_status(view: View, status: str, done: str) -> web.StreamResponse:
    async with view.db.pool.acquire() as conn:
        await service.update_definition(
            conn, view.session.account_id, _key(view), DefinitionPatch.model_validate({"status": status})
        )
    view.redirect(f"/definitions/{_key(view)}", done=done)


@PAGES.page("POST", "/definitions/{definitionKey}/activate", scope=SCOPE)
async def activate_definition(view: View) -> web.StreamResponse:
    return await _set_status(view, "active", "activated")


@PAGES.page("POST", "/definitions/{definitionKey}/deactivate", scope=SCOPE)
async def deactivate_definition(view: View) -> web.StreamResponse:
    return await _set_status(view, "inactive", "deactivated")
