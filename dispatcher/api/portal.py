"""Portal links: a short-lived URL an app embeds (an iframe) so that its own customer manages their
endpoints, sees their deliveries and retries, and reaches nothing else of the account."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatcher import ids, sessions
from dispatcher.api.keys import DB, SETTINGS
from dispatcher.api.routing import Call, Router, validate
from dispatcher.inputs import WHOLE

router = Router()
CallbackId = Annotated[str, Field(min_length=1, max_length=40, description="A callback id (cb_…).")]


ExpiresIn = Annotated[
    int, Field(ge=60, le=7 * 86400, description="Seconds the link and its portal stay usable."), WHOLE
]


class PortalLinkForCallbacks(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    callbackIds: list[CallbackId] = Field(min_length=1, max_length=100, description="The callbacks it reaches.")
    expiresIn: ExpiresIn = 3600


class PortalLinkForAll(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    all: Literal[True] = Field(description="Every callback of the account, new ones included.")
    expiresIn: ExpiresIn = 3600


PortalLinkIn = Annotated[PortalLinkForCallbacks | PortalLinkForAll, Field(description="Some callbacks, or all.")]


def _parse(data: Any) -> PortalLinkForCallbacks | PortalLinkForAll:
    if isinstance(data, dict) and "all" in data:
        return validate(PortalLinkForAll, data)
    return validate(PortalLinkForCallbacks, data)


class PortalLinkOut(BaseModel):
    url: str
    expiresAt: str
    callbackIds: list[str] | None


@router.route("POST", "/v1/portal-links", summary="A signed, short-lived portal URL for some callbacks",
              scope="callbacks:manage", body=PortalLinkIn, response=PortalLinkOut, status=201,
              tag="callbacks", raw_body=True)  # fmt: skip
async def create_portal_link(call: Call) -> Any:
    body = _parse(call.body)
    assert call.principal is not None
    wanted = (
        None if isinstance(body, PortalLinkForAll) else [ids.decode("cb", cb, "callback") for cb in body.callbackIds]
    )
    token, expires_at = await sessions.start_portal(
        call.app[DB].pool, call.principal.account_id, wanted, timedelta(seconds=body.expiresIn)
    )
    base = call.app[SETTINGS].tracking_base_url.rstrip("/")
    return {
        "url": f"{base}/portal/{token}/callbacks",
        "expiresAt": expires_at.isoformat(),
        "callbackIds": None if wanted is None else [ids.encode("cb", n) for n in sorted(set(wanted))],
    }
