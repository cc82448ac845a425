"""Marketing Cloud's wire conventions shared by its compatibility routes (Transactional Messaging, ENS):
the REST error body `{"message", "errorcode", "documentation"}` with the documented custom codes."""

from __future__ import annotations

from typing import Any

from dispatcher.api.routing import ErrorShape
from dispatcher.errors import DispatcherError

DOCUMENTATION = "https://developer.salesforce.com/docs/marketing/marketing-cloud/guide/error-handling.html"

# Marketing Cloud's custom codes ("Handle Errors in REST API"): validation 1000x, authorization 2000x, 0 for a
# missing or invalid token.
_VALIDATION = {"required": 10002, "invalid_type": 10001, "invalid_json": 10004, "unknown_field": 10003}
_BY_STATUS = {401: 0, 403: 20002}


def errorcode(err: DispatcherError) -> int:
    if err.status == 400:
        return _VALIDATION.get(err.code, 10005)
    return _BY_STATUS.get(err.status, 10000)


def error_body(err: DispatcherError) -> dict[str, Any]:
    message = f"{err.field}: {err.message}" if err.field else err.message
    return {"message": message, "errorcode": errorcode(err), "documentation": DOCUMENTATION}


ERRORS = ErrorShape(
    name="MarketingCloudError",
    schema={
        "type": "object",
        "required": ["message", "errorcode", "documentation"],
        "properties": {
            "message": {"type": "string"},
            "errorcode": {"type": "integer"},
            "documentation": {"type": "string"},
        },
    },
    render=error_body,
)
