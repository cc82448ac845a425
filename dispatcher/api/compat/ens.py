"""Marketing Cloud's Event Notification Service (ENS) REST API, translated onto the native callbacks and
subscriptions (dispatcher/callbacks.py): the same rows, the same handshake, the same fan-out and workers.

- `/platform/v1/ens-callbacks`: POST and PUT take and answer JSON arrays. Creating POSTs the handshake
  (`{callbackId, verificationKey}`) to the URL before answering; a URL that does not answer 200 within
  `verification_timeout` (30 s, as ENS) is not kept, and the request fails with 400. A callback made here has
  the `ens` format (ENS arrays signed with `x-sfmc-ens-signature`) and is the only kind these routes show.
- `/platform/v1/ens-verify`: the handshake's payload, sent back.
- `/platform/v1/ens-subscriptions`: `eventCategoryTypes` are our event types by their ENS names
  (delivery/formats.py ENS_CATEGORIES); `filters` `name=value` become the native filters.

Ids are the native ones (`cb_…`, `sub_…`): ENS clients treat them as opaque strings. Errors come back in
Marketing Cloud's shape (api/compat/sfmc.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel

from dispatcher import callbacks, handshake, ids
from dispatcher.api.compat import sfmc
from dispatcher.api.keys import DB, KEYRING, OUTBOUND, SETTINGS
from dispatcher.api.routing import Call, Router
from dispatcher.delivery import formats, outbound
from dispatcher.errors import Conflict, InvalidRequest, NotFound
from dispatcher.inputs import WHOLE, Name, Url
from dispatcher.logs import get_logger

router = Router()
log = get_logger("dispatcher.ens")
TAG = "ens"
SCOPE = "callbacks:manage"
_ROUTE: dict[str, Any] = {"scope": SCOPE, "tag": TAG, "error_shape": sfmc.ERRORS, "access_tokens": True}

# Our event types by ENS name, and back.
TYPES = {name: type_ for type_, name in formats.ENS_CATEGORIES.items()}
if TYPE_CHECKING:
    Category = str
else:
    Category = Literal[tuple(TYPES)]

# ENS filter items (its "Subscription Filters" table) as the native filter keys they test, and how a value reads.
_FILTERS: dict[str, str] = {
    "definitionKey": "definitionKey",
    "statusCode": "statusCode",
    "bounceCode": "bounceType",
    "smtpReason": "reason",
}
_BODY = ConfigDict(extra="forbid", strict=True)
BatchSize = Annotated[int, Field(ge=1, le=1000), WHOLE]
Id = Annotated[str, Field(min_length=1, max_length=40)]
Filter = Annotated[
    str,
    Field(
        max_length=300,
        pattern=r"^(?:(?:definitionKey|smtpReason)=[^\x00]+|statusCode=[0-9]{1,9}|bounceCode=(?:HARD|SOFT))$",
        description="name=value; the items ENS filters on: definitionKey, statusCode, bounceCode (HARD|SOFT), smtpReason",
    ),
]
Categories = Annotated[list[Category], Field(min_length=1, max_length=20)]
Filters = Annotated[list[Filter], Field(max_length=20)]
StatusReason = Annotated[str, Field(max_length=500)]


class EnsCallbackIn(BaseModel):
    model_config = _BODY
    callbackName: Name
    url: Url
    maxBatchSize: BatchSize = 1000


class EnsCallbackUpdate(BaseModel):
    model_config = _BODY
    callbackId: Id
    callbackName: Name
    maxBatchSize: BatchSize | None = None


class EnsCreatedCallbackOut(BaseModel):
    callbackId: str
    callbackName: str
    url: str
    maxBatchSize: int
    signatureKey: str


class EnsCallbackOut(BaseModel):
    callbackId: str
    callbackName: str
    url: str
    maxBatchSize: int
    status: str = Field(description="verified, unverified (the handshake is not completed) or disabled")
    statusReason: str


class EnsVerifyIn(BaseModel):
    model_config = _BODY
    callbackId: Id
    verificationKey: Annotated[str, Field(min_length=1, max_length=200)]


class EnsSubscriptionIn(BaseModel):
    model_config = _BODY
    subscriptionName: Name
    callbackId: Id
    eventCategoryTypes: Categories
    filters: Filters = []


class EnsSubscriptionUpdate(BaseModel):
    model_config = _BODY
    subscriptionId: Id
    eventCategoryTypes: Categories
    subscriptionName: Name | None = None
    filters: Filters | None = None
    status: Literal["active", "paused"] | None = None
    statusReason: StatusReason | None = Field(None, description="accepted; not stored (answered as '')")


class EnsSubscriptionOut(BaseModel):
    callbackId: str
    callbackName: str
    url: str
    maxBatchSize: int
    subscriptionId: str
    subscriptionName: str
    eventCategoryTypes: list[str]
    filters: list[str]
    status: str
    statusReason: str


# ENS takes these as JSON arrays.
class EnsCallbacksIn(RootModel[Annotated[list[EnsCallbackIn], Field(min_length=1, max_length=100)]]):
    pass


class EnsCallbackUpdates(RootModel[Annotated[list[EnsCallbackUpdate], Field(min_length=1, max_length=100)]]):
    pass


class EnsSubscriptionsIn(RootModel[Annotated[list[EnsSubscriptionIn], Field(min_length=1, max_length=100)]]):
    pass


class EnsSubscriptionUpdates(RootModel[Annotated[list[EnsSubscriptionUpdate], Field(min_length=1, max_length=100)]]):
    pass


# --- translation -----------------------------------------------------------------------------


def _account(call: Call) -> int:
    assert call.principal is not None
    return call.principal.account_id


def _callback_json(row: Any) -> dict[str, Any]:
    status = {"active": "verified", "pending_verification": "unverified"}.get(row["status"], row["status"])
    return EnsCallbackOut(
        callbackId=ids.encode("cb", row["id"]), callbackName=row["name"], url=row["url"],
        maxBatchSize=row["max_batch_size"], status=status, statusReason=row["disabled_reason"] or "",
    ).model_dump()  # fmt: skip


def native_filters(items: list[str]) -> dict[str, Any]:
    """`["definitionKey=receipt", "bounceCode=HARD"]` as native filters (all must match, as in ENS)."""
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        name, _, value = item.partition("=")
        if name not in _FILTERS:
            raise InvalidRequest(f"must filter on one of {', '.join(_FILTERS)}", field=f"filters[{i}]")
        if name == "statusCode":
            if not value.isdigit():
                raise InvalidRequest("statusCode must be a number", field=f"filters[{i}]")
            out["statusCode"] = int(value)
        elif name == "bounceCode":
            if value.upper() not in ("HARD", "SOFT"):
                raise InvalidRequest("bounceCode must be HARD or SOFT", field=f"filters[{i}]")
            out["bounceType"] = value.lower()
        else:
            out[_FILTERS[name]] = value
    return out


def ens_filters(native: dict[str, Any]) -> list[str]:
    back = {key: name for name, key in _FILTERS.items()}
    out = []
    for key, value in native.items():
        if key == "bounceType":
            value = str(value).upper()
        out.append(f"{back.get(key, key)}={value}")
    return out


def _subscription_json(row: Any, cb: Any) -> dict[str, Any]:
    return EnsSubscriptionOut(
        callbackId=ids.encode("cb", cb["id"]), callbackName=cb["name"], url=cb["url"],
        maxBatchSize=cb["max_batch_size"], subscriptionId=ids.encode("sub", row["id"]), subscriptionName=row["name"],
        eventCategoryTypes=[formats.ENS_CATEGORIES.get(t, t) for t in row["event_types"]],
        filters=ens_filters(row["filters"]), status=row["status"], statusReason="",
    ).model_dump()  # fmt: skip


async def _ens_callback(conn: asyncpg.Connection, account_id: int, callback_id: str) -> asyncpg.Record:
    """A callback of the ens format: the others do not exist on these routes (ENS: 404)."""
    row = await callbacks.get_callback(conn, account_id, callback_id)
    if row["format"] != "ens":
        raise NotFound("Callback ID doesn't exist")
    return row


async def _callback_of(conn: asyncpg.Connection, account_id: int, sub: asyncpg.Record) -> asyncpg.Record:
    row = await callbacks.get_callback(conn, account_id, ids.encode("cb", sub["callback_id"]))
    if row["format"] != "ens":
        raise NotFound("no such subscription")
    return row


# --- callbacks -------------------------------------------------------------------------------


async def _probe(app: web.Application, row: Any, key: str) -> str | None:
    """POST the handshake now; None when the URL answered 200, else why not."""
    shaker = handshake.Handshaker(app[DB], app[SETTINGS], app[KEYRING], app[OUTBOUND])
    outcome = await shaker.attempt(handshake.Pending(row["id"], row["url"], key, row["verification_attempts"]))
    if outcome is None:
        return "the callback was deleted meanwhile"
    if outcome["verification_status_code"] == 200:
        return None
    if outcome["verification_status_code"] is not None:
        return f"Status: {outcome['verification_status_code']}"
    return f"Status: {outcome['verification_error'] or 'no answer'}"


@router.route("POST", "/platform/v1/ens-callbacks",
              summary="ENS: register callbacks; each URL must answer the verification POST with 200 at once",
              body=EnsCallbacksIn, response=list[EnsCreatedCallbackOut], status=201, **_ROUTE)  # fmt: skip
async def ens_create_callbacks(call: Call) -> Any:
    items: list[EnsCallbackIn] = call.body.root
    s = call.app[SETTINGS]
    for item in items:
        await outbound.check_url(item.url, allow_http=s.allow_http_callbacks, allowed=s.allowed_networks)
    created: list[tuple[Any, str]] = []
    try:
        for item in items:
            async with call.app[DB].pool.acquire() as conn:
                row, secret, key = await callbacks.create_callback(
                    conn, call.app[KEYRING], _account(call), name=item.callbackName, url=item.url, description=None,
                    max_batch_size=item.maxBatchSize, fmt="ens", lease=handshake.lease(s),
                )  # fmt: skip
            assert secret is not None  # an HMAC secret: ENS callbacks sign v1
            created.append((row, secret))
            failure = await _probe(call.app, row, key)
            if failure is not None:
                cid = ids.encode("cb", row["id"])
                raise InvalidRequest(
                    f"MCMS_UWH_Runtime_GeneralFailure_probeCallbackLiveness: CallbackId is {cid}. Could not verify "
                    f"callback url '{row['url']}'. Please test that the url is reachable with a POST call and "
                    f"returns a 200 http status code. {failure}",
                    code="callback_unreachable",
                )
    except Exception:
        # Nothing of a failed request is kept: the client creates the callbacks again, under the same names.
        async with call.app[DB].pool.acquire() as conn:
            for row, _ in created:
                try:
                    await callbacks.delete_callback(conn, _account(call), ids.encode("cb", row["id"]))
                except NotFound:
                    pass
        raise
    return [
        EnsCreatedCallbackOut(
            callbackId=ids.encode("cb", row["id"]), callbackName=row["name"], url=row["url"],
            maxBatchSize=row["max_batch_size"], signatureKey=formats.ens_signature_key(secret),
        ).model_dump()
        for row, secret in created
    ]  # fmt: skip


@router.route("GET", "/platform/v1/ens-callbacks", summary="ENS: list callbacks",
              response=list[EnsCallbackOut], **_ROUTE)  # fmt: skip
async def ens_list_callbacks(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        rows = await callbacks.list_callbacks(conn, _account(call))
    return [_callback_json(r) for r in rows if r["format"] == "ens"]


@router.route("GET", "/platform/v1/ens-callbacks/{callbackId}", summary="ENS: get a callback",
              response=EnsCallbackOut, **_ROUTE)  # fmt: skip
async def ens_get_callback(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        return _callback_json(await _ens_callback(conn, _account(call), call.path("callbackId")))


@router.route("PUT", "/platform/v1/ens-callbacks", summary="ENS: rename callbacks or change their batch size",
              body=EnsCallbackUpdates, response=list[EnsCallbackOut], **_ROUTE)  # fmt: skip
async def ens_update_callbacks(call: Call) -> Any:
    items: list[EnsCallbackUpdate] = call.body.root
    out = []
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        for item in items:
            await _ens_callback(conn, _account(call), item.callbackId)
            changes: dict[str, Any] = {"name": item.callbackName}
            if item.maxBatchSize is not None:
                changes["maxBatchSize"] = item.maxBatchSize
            row, _ = await callbacks.update_callback(
                conn, call.app[KEYRING], _account(call), item.callbackId, changes,
                lease=handshake.lease(call.app[SETTINGS]),
            )  # fmt: skip
            out.append(_callback_json(row))
    return out


@router.route("DELETE", "/platform/v1/ens-callbacks/{callbackId}",
              summary="ENS: delete a callback that no subscription uses (409 while one does)", **_ROUTE)  # fmt: skip
async def ens_delete_callback(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        row = await _ens_callback(conn, _account(call), call.path("callbackId"))
        if await callbacks.list_subscriptions(conn, _account(call), ids.encode("cb", row["id"])):
            raise Conflict("Subscriptions exist for the callback: delete them first", field="callbackId")
        await callbacks.delete_callback(conn, _account(call), call.path("callbackId"))
    return web.Response(status=200)


@router.route("POST", "/platform/v1/ens-verify", summary="ENS: verify a callback with the key POSTed to its URL",
              body=EnsVerifyIn, response=EnsCallbackOut, **_ROUTE)  # fmt: skip
async def ens_verify_callback(call: Call) -> Any:
    body: EnsVerifyIn = call.body
    async with call.app[DB].pool.acquire() as conn:
        await _ens_callback(conn, _account(call), body.callbackId)
        try:
            row = await callbacks.verify(conn, _account(call), body.callbackId, body.verificationKey)
        except InvalidRequest as err:
            if err.code == "invalid_verification_key":  # ENS: 404, "Incorrect callback ID, verification key, or both"
                raise NotFound("Incorrect callback ID, verification key, or both") from None
            raise
    return _callback_json(row)


# --- subscriptions ---------------------------------------------------------------------------


@router.route("POST", "/platform/v1/ens-subscriptions", summary="ENS: subscribe a verified callback to event types",
              body=EnsSubscriptionsIn, response=list[EnsSubscriptionOut], status=201, **_ROUTE)  # fmt: skip
async def ens_create_subscriptions(call: Call) -> Any:
    items: list[EnsSubscriptionIn] = call.body.root
    out = []
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        for i, item in enumerate(items):
            filters = native_filters(item.filters)
            cb = await _ens_callback(conn, _account(call), item.callbackId)
            if cb["status"] == "pending_verification":
                raise InvalidRequest("verify the callback before subscribing it", field=f"[{i}].callbackId")
            row = await callbacks.create_subscription(
                conn, _account(call), name=item.subscriptionName, callback_id=item.callbackId,
                event_types=[TYPES[c] for c in dict.fromkeys(item.eventCategoryTypes)], filters=filters,
                status="active",
            )  # fmt: skip
            out.append(_subscription_json(row, cb))
    return out


@router.route("GET", "/platform/v1/ens-subscriptions-by-cb/{callbackId}", summary="ENS: a callback's subscriptions",
              response=list[EnsSubscriptionOut], **_ROUTE)  # fmt: skip
async def ens_list_subscriptions(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        cb = await _ens_callback(conn, _account(call), call.path("callbackId"))
        rows = await callbacks.list_subscriptions(conn, _account(call), ids.encode("cb", cb["id"]))
    return [_subscription_json(r, cb) for r in rows]


@router.route("GET", "/platform/v1/ens-subscriptions/{subscriptionId}", summary="ENS: get a subscription",
              response=EnsSubscriptionOut, **_ROUTE)  # fmt: skip
async def ens_get_subscription(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        row = await callbacks.get_subscription(conn, _account(call), call.path("subscriptionId"))
        return _subscription_json(row, await _callback_of(conn, _account(call), row))


@router.route("PUT", "/platform/v1/ens-subscriptions",
              summary="ENS: change subscriptions; status paused drops their events until active again",
              body=EnsSubscriptionUpdates, response=list[EnsSubscriptionOut], **_ROUTE)  # fmt: skip
async def ens_update_subscriptions(call: Call) -> Any:
    items: list[EnsSubscriptionUpdate] = call.body.root
    out = []
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        for item in items:
            current = await callbacks.get_subscription(conn, _account(call), item.subscriptionId)
            cb = await _callback_of(conn, _account(call), current)
            changes: dict[str, Any] = {"eventTypes": [TYPES[c] for c in dict.fromkeys(item.eventCategoryTypes)]}
            if item.subscriptionName is not None:
                changes["name"] = item.subscriptionName
            if item.filters is not None:
                changes["filters"] = native_filters(item.filters)
            if item.status is not None:
                changes["status"] = item.status
            row = await callbacks.update_subscription(conn, _account(call), item.subscriptionId, changes)
            out.append(_subscription_json(row, cb))
    return out


@router.route("DELETE", "/platform/v1/ens-subscriptions/{subscriptionId}", summary="ENS: delete a subscription",
              **_ROUTE)  # fmt: skip
async def ens_delete_subscription(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        row = await callbacks.get_subscription(conn, _account(call), call.path("subscriptionId"))
        await _callback_of(conn, _account(call), row)
        await callbacks.delete_subscription(conn, _account(call), call.path("subscriptionId"))
    return web.Response(status=200)
