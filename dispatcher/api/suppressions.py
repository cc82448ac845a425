"""HTTP handlers for an account's suppression list. Reading it is part of the event history (`events:read`);
taking an address off it decides what is sent, so that needs `messages:send`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from dispatcher import events, suppressions
from dispatcher.api.keys import DB
from dispatcher.api.routing import Call, Router
from dispatcher.suppressions import SuppressionOut

router = Router()
Address = Annotated[events.Text, Field(min_length=1, max_length=suppressions.MAX_ADDRESS)]
_ADDRESS = {"address": Address}  # a path address that is not on the list is a 404, never a 400


class SuppressionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Literal["unsubscribed", "bounced", "complained"] | None = None
    addressPrefix: Address | None = Field(None, description="Addresses starting with this, compared in lower case.")
    since: events.Timestamp | None = Field(None, description="Suppressed at or after.")
    until: events.Timestamp | None = Field(None, description="Suppressed before.")
    limit: int = Field(100, ge=1, le=1000)
    cursor: events.Cursor | None = None


class SuppressionListOut(BaseModel):
    suppressions: list[SuppressionOut]
    nextCursor: str | None


def _account(call: Call) -> int:
    assert call.principal is not None
    return call.principal.account_id


@router.route(
    "GET", "/v1/suppressions", summary="List suppressed addresses, oldest first, keyset-paginated",
    scope="events:read", query=SuppressionsQuery, response=SuppressionListOut, tag="suppressions",
)  # fmt: skip
async def list_suppressions(call: Call) -> Any:
    q: SuppressionsQuery = call.query
    account_id = _account(call)
    async with call.app[DB].read_pool.acquire() as conn:
        return await events.keyset_page(
            "suppressions", q.cursor, q.limit,
            lambda after_id, limit: suppressions.list_suppressions(
                conn, account_id, after_id=after_id, reason=q.reason, address_prefix=q.addressPrefix,
                since=q.since, until=q.until, limit=limit,
            ),
            suppressions.suppression_json,
        )  # fmt: skip


@router.route("GET", "/v1/suppressions/{address:[^/]+}", summary="Why an address is suppressed (404: it is not)",
              scope="events:read", response=SuppressionOut, tag="suppressions", params=_ADDRESS)  # fmt: skip
async def get_suppression(call: Call) -> Any:
    async with call.app[DB].read_pool.acquire() as conn:
        row = await suppressions.get_suppression(conn, _account(call), call.path("address"))
    return suppressions.suppression_json(row)


@router.route("DELETE", "/v1/suppressions/{address:[^/]+}", summary="Take an address off the suppression list",
              scope="messages:send", status=204, tag="suppressions", params=_ADDRESS)  # fmt: skip
async def delete_suppression(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        await suppressions.delete_suppression(conn, _account(call), call.path("address"))
    return web.Response(status=204)
