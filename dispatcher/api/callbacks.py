"""HTTP handlers for callbacks, subscriptions and delivery history."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from dispatcher import callbacks, events, filters, handshake, ids
from dispatcher.api.keys import DB, KEYRING, OUTBOUND, SETTINGS
from dispatcher.api.routing import Call, Router
from dispatcher.callbacks import CallbackOut, SubscriptionOut, VerificationOut
from dispatcher.delivery import history, outbound
from dispatcher.delivery.history import AttemptOut, CallbackAttemptOut, DeliveryOut
from dispatcher.errors import Conflict
from dispatcher.inputs import WHOLE, Description, Name, Omittable, Url
from dispatcher.logs import get_logger

router = Router()
log = get_logger("dispatcher.callbacks")
VERIFICATIONS = web.AppKey("verifications", set[asyncio.Task[None]])

BatchSize = Annotated[int, Field(ge=1, le=1000), WHOLE]
# A payload filter (docs/filters.md): checked and compiled by callbacks.create_subscription / update_subscription.
Filters = Annotated[dict[str, Any], WithJsonSchema(filters.json_schema())]
if TYPE_CHECKING:
    SubscribableType = str
    MessageType = str
else:
    SubscribableType = Literal[events.EVENT_TYPES + ("*",)]
    MessageType = Literal[events.MESSAGE_EVENT_TYPES]


# Request bodies are strict: a JSON value of the wrong type (true for an integer) is refused, never coerced.
_BODY = ConfigDict(extra="forbid", strict=True)


Format = Literal["standard", "ens", "customerio"]
_FORMAT = (
    "standard: Standard Webhooks JSON with webhook-signature; ens: Marketing Cloud ENS arrays with "
    "x-sfmc-ens-signature; customerio: Customer.io reporting webhooks with X-CIO-Signature"
)

Signature = Literal["v1", "v1a"]
_SIGNATURE = (
    "Standard Webhooks scheme of webhook-signature: v1 (HMAC-SHA256, the signing secret) or v1a (ed25519: "
    "receivers verify with the callback's publicKey; format 'standard' only). Changing it makes a new key; "
    "the old one keeps signing for the rotation grace period"
)


Ordering = Literal["none", "messageKey"]
_ORDERING = (
    "messageKey: each message's events reach this callback in the order they were recorded, one at a time "
    "(the next is sent once the previous has succeeded or finally failed); other messages are not held up"
)


class RateLimit(BaseModel):
    """At most `perSecond` requests on average, and `burst` at once, across every worker process."""

    model_config = _BODY
    perSecond: Annotated[float, Field(gt=0, le=1000, description="Requests per second, on average")]
    burst: Annotated[int, Field(ge=1, le=10000), WHOLE] | None = Field(
        None, description="Requests at once (default: one second's worth)"
    )


_RATE_LIMIT = (
    "Deliveries wait for their turn (no retry budget is spent); a 429 without Retry-After halves the pace "
    "for a minute. null (PATCH): no limit"
)


class CallbackIn(BaseModel):
    model_config = _BODY
    name: Name
    url: Url
    maxBatchSize: BatchSize = 1
    description: Description | None = None
    format: Format = Field("standard", description=_FORMAT)
    signature: Signature = Field("v1", description=_SIGNATURE)
    ordering: Ordering = Field("none", description=_ORDERING)
    rateLimit: RateLimit | None = Field(None, description=_RATE_LIMIT)


class CallbackPatch(BaseModel):
    model_config = _BODY
    name: Omittable[Name] = None
    url: Omittable[Url] = None
    maxBatchSize: Omittable[BatchSize] = None
    description: Description | None = Field(None, description="null clears it")
    format: Omittable[Format] = Field(None, description=_FORMAT)
    signature: Omittable[Signature] = Field(None, description=_SIGNATURE)
    ordering: Omittable[Ordering] = Field(None, description=_ORDERING)
    rateLimit: RateLimit | None = Field(None, description=_RATE_LIMIT)
    status: Omittable[Literal["active", "disabled"]] = Field(
        None, description="'active' re-enables a disabled callback."
    )
    paused: Omittable[bool] = Field(
        None, description="true pauses deliveries (they wait in the queue) until false resumes them"
    )


class TestEventIn(BaseModel):
    model_config = _BODY
    type: MessageType = Field("delivered", description="The sample event's type")


class TestEventOut(BaseModel):
    deliveryId: str
    eventId: str
    messageKey: str
    status: str


class CallbackListOut(BaseModel):
    callbacks: list[CallbackOut]


class VerifyIn(BaseModel):
    model_config = _BODY
    verificationKey: Annotated[str, Field(min_length=1, max_length=200)]


class SecretOut(BaseModel):
    signingSecret: str | None = Field(description="v1: the new HMAC secret, shown this once; null for v1a")
    publicKey: str | None = Field(description="v1a: the new public key (whpk_<base64>); null for v1")
    previousPublicKey: str | None = Field(description="v1a: the old public key, still signing during the grace period")


class SubscriptionIn(BaseModel):
    model_config = _BODY
    name: Name
    callbackId: Annotated[str, Field(min_length=1, max_length=40)]
    eventTypes: Annotated[list[SubscribableType], Field(min_length=1, max_length=20)]
    filters: Filters = {}
    status: Literal["active", "paused"] = "active"


class SubscriptionPatch(BaseModel):
    model_config = _BODY
    name: Omittable[Name] = None
    eventTypes: Omittable[Annotated[list[SubscribableType], Field(min_length=1, max_length=20)]] = None
    filters: Omittable[Filters] = None
    status: Omittable[Literal["active", "paused"]] = None


class SubscriptionListOut(BaseModel):
    subscriptions: list[SubscriptionOut]


class SubscriptionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    callbackId: str | None = Field(None, max_length=40)


class DeliveriesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["pending", "succeeded", "failed"] | None = None
    since: events.Timestamp | None = None
    until: events.Timestamp | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: events.Cursor | None = None


class AttemptListOut(BaseModel):
    attempts: list[CallbackAttemptOut]
    nextCursor: str | None


class AttemptsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Literal["succeeded", "failed"] | None = Field(None, description="failed: anything but a 2xx answer")
    since: events.Timestamp | None = None
    until: events.Timestamp | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: events.Cursor | None = None


class DeliveryDetailOut(DeliveryOut):
    attempts: list[AttemptOut]


class DeliveryListOut(BaseModel):
    deliveries: list[DeliveryOut]
    nextCursor: str | None


class RecoverIn(BaseModel):
    model_config = _BODY
    since: events.Timestamp
    until: events.Timestamp | None = Field(None, description="at or before since: an empty window")


class RecoverOut(BaseModel):
    requeued: int


class Accepted(BaseModel):
    status: str


def _account(call: Call) -> int:
    assert call.principal is not None
    return call.principal.account_id


async def _check_url(call: Call, url: str) -> None:
    s = call.app[SETTINGS]
    await outbound.check_url(url, allow_http=s.allow_http_callbacks, allowed=s.allowed_networks)


def handshaker(app: web.Application) -> handshake.Handshaker:
    return handshake.Handshaker(app[DB], app[SETTINGS], app[KEYRING], app[OUTBOUND])


def _pending(row: Any, key: str) -> handshake.Pending:
    return handshake.Pending(row["id"], row["url"], key, row["verification_attempts"])


def send_verification(app: web.Application, row: Any, key: str) -> None:
    """After commit, POST the verification key to the URL in the background; a retrier sends it again if
    this request fails (or never records its outcome)."""

    async def send() -> None:
        try:
            await handshaker(app).attempt(_pending(row, key))
        except Exception:
            log.exception("verification failed", callback_id=f"cb_{row['id']}")

    task = asyncio.create_task(send())
    app[VERIFICATIONS].add(task)
    task.add_done_callback(app[VERIFICATIONS].discard)


# --- callbacks -------------------------------------------------------------------------------


@router.route("POST", "/v1/callbacks", summary="Register a callback URL (sends it a verification key)",
              scope="callbacks:manage", body=CallbackIn, response=CallbackOut, status=201, tag="callbacks")  # fmt: skip
async def create_callback(call: Call) -> Any:
    body: CallbackIn = call.body
    await _check_url(call, body.url)
    async with call.app[DB].pool.acquire() as conn:
        row, secret, key = await callbacks.create_callback(
            conn, call.app[KEYRING], _account(call), name=body.name, url=body.url,
            description=body.description, max_batch_size=body.maxBatchSize, fmt=body.format,
            signature=body.signature, lease=handshake.lease(call.app[SETTINGS]), ordering=body.ordering,
            rate=body.rateLimit.model_dump() if body.rateLimit else None,
        )  # fmt: skip
        (out,) = await callbacks.callbacks_json(conn, call.app[KEYRING], [row], signing_secret=secret)
    send_verification(call.app, row, key)
    return out


@router.route("GET", "/v1/callbacks", summary="List callbacks", scope="callbacks:manage",
              response=CallbackListOut, tag="callbacks")  # fmt: skip
async def list_callbacks(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        rows = await callbacks.list_callbacks(conn, _account(call))
        return {"callbacks": await callbacks.callbacks_json(conn, call.app[KEYRING], rows)}


@router.route("GET", "/v1/callbacks/{callbackId}", summary="Get a callback", scope="callbacks:manage",
              response=CallbackOut, tag="callbacks")  # fmt: skip
async def get_callback(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        row = await callbacks.get_callback(conn, _account(call), call.path("callbackId"))
        (out,) = await callbacks.callbacks_json(conn, call.app[KEYRING], [row])
    return out


@router.route("PATCH", "/v1/callbacks/{callbackId}", summary="Change a callback; status 'active' re-enables it",
              scope="callbacks:manage", body=CallbackPatch, response=CallbackOut, tag="callbacks")  # fmt: skip
async def patch_callback(call: Call) -> Any:
    changes = call.body.model_dump(exclude_unset=True)
    if "url" in changes:
        await _check_url(call, changes["url"])
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        row, key = await callbacks.update_callback(
            conn, call.app[KEYRING], _account(call), call.path("callbackId"), changes,
            lease=handshake.lease(call.app[SETTINGS]),
        )  # fmt: skip
        row, new_key = await callbacks.switch_signature(
            conn, call.app[KEYRING], row, changes.get("signature"), call.app[SETTINGS].secret_rotation_grace
        )
        # Switching to v1 shows the new HMAC secret this once; a v1a key shows as its publicKey.
        (out,) = await callbacks.callbacks_json(conn, call.app[KEYRING], [row], new_key.secret if new_key else None)
    if key:
        send_verification(call.app, row, key)
    return out


@router.route("DELETE", "/v1/callbacks/{callbackId}", summary="Delete a callback, its subscriptions and deliveries",
              scope="callbacks:manage", status=204, tag="callbacks")  # fmt: skip
async def delete_callback(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        await callbacks.delete_callback(conn, _account(call), call.path("callbackId"))
    return web.Response(status=204)


@router.route("POST", "/v1/callbacks/{callbackId}/verify", summary="Prove control of the URL",
              scope="callbacks:manage", body=VerifyIn, response=CallbackOut, tag="callbacks")  # fmt: skip
async def verify_callback(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        row = await callbacks.verify(conn, _account(call), call.path("callbackId"), call.body.verificationKey)
        (out,) = await callbacks.callbacks_json(conn, call.app[KEYRING], [row])
    return out


@router.route("POST", "/v1/callbacks/{callbackId}/verification",
              summary="Send a fresh verification key now; answers the outcome (a failed one is retried)",
              scope="callbacks:manage", response=VerificationOut, tag="callbacks")  # fmt: skip
async def resend_verification(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        row, key = await callbacks.new_verification(
            conn, call.app[KEYRING], _account(call), call.path("callbackId"), lease=handshake.lease(call.app[SETTINGS])
        )
    if key is None:  # verified already: answer how, without sending anything
        if (state := callbacks.verification_json(row)) is None:
            raise Conflict("this callback was verified before handshakes were recorded", field="callbackId")
        return state
    outcome = await handshaker(call.app).attempt(_pending(row, key))
    if outcome is None:  # deleted, or another resend replaced the key meanwhile: answer the state now
        async with call.app[DB].pool.acquire() as conn:
            outcome = await callbacks.get_callback(conn, _account(call), call.path("callbackId"))
    return callbacks.verification_json(outcome)


@router.route("POST", "/v1/callbacks/{callbackId}/rotate-secret",
              summary="New signing secret (v1) or key pair (v1a); the old one keeps signing during the grace period",
              scope="callbacks:manage", response=SecretOut, tag="callbacks")  # fmt: skip
async def rotate_secret(call: Call) -> Any:
    grace = call.app[SETTINGS].secret_rotation_grace
    async with call.app[DB].pool.acquire() as conn:
        new = await callbacks.rotate_secret(conn, call.app[KEYRING], _account(call), call.path("callbackId"), grace)
        row = await callbacks.get_callback(conn, _account(call), call.path("callbackId"))
        (out,) = await callbacks.callbacks_json(conn, call.app[KEYRING], [row])
    return {"signingSecret": new.secret, "publicKey": new.public_key, "previousPublicKey": out["previousPublicKey"]}


@router.route("POST", "/v1/callbacks/{callbackId}/test",
              summary="Send a signed sample event to this callback now; recorded like any delivery, marked as a test",
              scope="callbacks:manage", body=TestEventIn, response=TestEventOut, status=202, tag="callbacks")  # fmt: skip
async def send_test_event(call: Call) -> Any:
    body: TestEventIn = call.body
    async with call.app[DB].pool.acquire() as conn:
        row = await callbacks.send_test_event(conn, _account(call), call.path("callbackId"), body.type)
    return {"deliveryId": ids.encode("dlv", row["delivery_id"]), "eventId": events.event_id(row["id"]),
            "messageKey": row["message_key"], "status": "pending"}  # fmt: skip


@router.route("GET", "/v1/callbacks/{callbackId}/deliveries", summary="A callback's deliveries, oldest first",
              scope="events:read", query=DeliveriesQuery, response=DeliveryListOut, tag="deliveries")  # fmt: skip
async def list_deliveries(call: Call) -> Any:
    q: DeliveriesQuery = call.query
    async with call.app[DB].read_pool.acquire() as conn:
        cb = await callbacks.get_callback(conn, _account(call), call.path("callbackId"))
        return await events.keyset_page(
            "deliveries", q.cursor, q.limit,
            lambda after_id, limit: history.list_deliveries(
                conn, _account(call), cb["id"], after_id=after_id, status=q.status, since=q.since, until=q.until,
                limit=limit,
            ),
            history.delivery_json,
        )  # fmt: skip


@router.route("GET", "/v1/callbacks/{callbackId}/attempts", summary="A callback's attempt log: every request, in the order recorded",
              scope="events:read", query=AttemptsQuery, response=AttemptListOut, tag="deliveries")  # fmt: skip
async def list_attempts(call: Call) -> Any:
    q: AttemptsQuery = call.query
    async with call.app[DB].read_pool.acquire() as conn:
        cb = await callbacks.get_callback(conn, _account(call), call.path("callbackId"))
        return await events.keyset_page(
            "attempts", q.cursor, q.limit,
            lambda after_id, limit: history.callback_attempts(
                conn, _account(call), cb["id"], after_id=after_id,
                succeeded=None if q.outcome is None else q.outcome == "succeeded", since=q.since, until=q.until,
                limit=limit,
            ),
            history.attempt_json,
        )  # fmt: skip


@router.route("POST", "/v1/callbacks/{callbackId}/recover", summary="Re-queue failed deliveries in a window",
              scope="callbacks:manage", body=RecoverIn, response=RecoverOut, tag="deliveries")  # fmt: skip
async def recover(call: Call) -> Any:
    body: RecoverIn = call.body
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        cb = await callbacks.get_callback(conn, _account(call), call.path("callbackId"))
        count = await history.recover(conn, _account(call), cb["id"], body.since, body.until)
    return {"requeued": count}


@router.route("GET", "/v1/deliveries/{deliveryId}", summary="A delivery and all its attempts",
              scope="events:read", response=DeliveryDetailOut, tag="deliveries")  # fmt: skip
async def get_delivery(call: Call) -> Any:
    async with call.app[DB].read_pool.acquire() as conn:
        return await history.get_delivery(conn, _account(call), call.path("deliveryId"))


@router.route("POST", "/v1/deliveries/{deliveryId}/retry", summary="Send a delivery again now, whatever its state",
              scope="callbacks:manage", response=Accepted, status=202, tag="deliveries")  # fmt: skip
async def retry_delivery(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        await history.retry(conn, _account(call), call.path("deliveryId"))
    return {"status": "pending"}


# --- subscriptions ---------------------------------------------------------------------------


@router.route("POST", "/v1/subscriptions", summary="Subscribe a callback to event types",
              scope="callbacks:manage", body=SubscriptionIn, response=SubscriptionOut, status=201,
              tag="subscriptions")  # fmt: skip
async def create_subscription(call: Call) -> Any:
    b: SubscriptionIn = call.body
    async with call.app[DB].pool.acquire() as conn:
        row = await callbacks.create_subscription(
            conn, _account(call), name=b.name, callback_id=b.callbackId, event_types=b.eventTypes,
            filters=b.filters, status=b.status,
        )  # fmt: skip
    return callbacks.subscription_json(row)


@router.route("GET", "/v1/subscriptions", summary="List subscriptions", scope="callbacks:manage",
              query=SubscriptionsQuery, response=SubscriptionListOut, tag="subscriptions")  # fmt: skip
async def list_subscriptions(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        rows = await callbacks.list_subscriptions(conn, _account(call), call.query.callbackId)
    return {"subscriptions": [callbacks.subscription_json(r) for r in rows]}


@router.route("GET", "/v1/subscriptions/{subscriptionId}", summary="Get a subscription", scope="callbacks:manage",
              response=SubscriptionOut, tag="subscriptions")  # fmt: skip
async def get_subscription(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        row = await callbacks.get_subscription(conn, _account(call), call.path("subscriptionId"))
    return callbacks.subscription_json(row)


@router.route("PATCH", "/v1/subscriptions/{subscriptionId}", summary="Change, pause or resume a subscription",
              scope="callbacks:manage", body=SubscriptionPatch, response=SubscriptionOut, tag="subscriptions")  # fmt: skip
async def patch_subscription(call: Call) -> Any:
    changes = call.body.model_dump(exclude_unset=True)
    async with call.app[DB].pool.acquire() as conn:
        row = await callbacks.update_subscription(conn, _account(call), call.path("subscriptionId"), changes)
    return callbacks.subscription_json(row)


@router.route("DELETE", "/v1/subscriptions/{subscriptionId}", summary="Delete a subscription",
              scope="callbacks:manage", status=204, tag="subscriptions")  # fmt: skip
async def delete_subscription(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        await callbacks.delete_subscription(conn, _account(call), call.path("subscriptionId"))
    return web.Response(status=204)
