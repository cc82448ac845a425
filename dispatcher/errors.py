"""The one exception hierarchy; the API middleware maps each class to a status and JSON body."""

from __future__ import annotations


class DispatcherError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict:
        error: dict = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class InvalidRequest(DispatcherError):
    status, code = 400, "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None, **kw):
        super().__init__(message, field=field, **kw)
        if code:
            self.code = code


class Unauthorized(DispatcherError):
    status, code = 401, "unauthorized"


class Forbidden(DispatcherError):
    status, code = 403, "forbidden"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None, **kw):
        super().__init__(message, field=field, **kw)
        if code:
            self.code = code


class NotFound(DispatcherError):
    status, code = 404, "not_found"


class MethodNotAllowed(DispatcherError):
    status, code = 405, "method_not_allowed"


class Conflict(DispatcherError):
    status, code = 409, "conflict"

    def __init__(self, message: str, *, extra: dict | None = None, **kw):
        super().__init__(message, **kw)
        self.extra = extra or {}

    def body(self) -> dict:
        body = super().body()
        body["error"].update(self.extra)
        return body


class PayloadTooLarge(DispatcherError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(DispatcherError):
    status, code = 415, "unsupported_media_type"


class RateLimited(DispatcherError):
    status, code = 429, "rate_limited"


class Unavailable(DispatcherError):
    status, code = 503, "unavailable"
