"""Credentials for providers that do not sign their webhooks (Postmark, SparkPost, Brevo): HTTP basic auth
in the webhook URL, or a token the provider sends in a header. Shared by those adapters, with the diagnostic
helpers their bounce texts need."""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from dispatcher.inbound.adapter import Refused, Request, SourceConfig, check_basic_auth, same, smtp_code
from dispatcher.inputs import Omittable


def _no_colon(value: str) -> str:
    if ":" in value:
        raise ValueError("must not contain a colon (HTTP basic auth cannot carry one in the username)")
    return value


Username = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_colon)]
Password = Annotated[str, Field(min_length=1, max_length=200)]
Token = Annotated[str, Field(min_length=1, max_length=500)]


def _required(model: type[SourceConfig], field: str, message: str) -> ValidationError:
    """A validation error on one field of the config, so the API's 400 names it."""
    error = PydanticCustomError("required", message)  # type: ignore[arg-type]
    return ValidationError.from_exception_data(model.__name__, [InitErrorDetails(type=error, loc=(field,), input=None)])


class BasicOrTokenConfig(SourceConfig):
    """HTTP basic auth (username and password) or a header token; at least one of the two."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "anyOf": [{"required": ["username", "password"]}, {"required": ["token"]}],
            "dependentRequired": {"username": ["password"], "password": ["username"]},
        },
    )

    username: Omittable[Username] = Field(None, description="The HTTP basic auth username the webhook URL carries")
    password: Omittable[Password] = Field(None, description="The HTTP basic auth password (secret)")
    token: Omittable[Token] = Field(None, description="The token the provider sends in its header (secret)")

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.username is not None and self.password is None:
            raise _required(type(self), "password", "is required with username")
        if self.password is not None and self.username is None:
            raise _required(type(self), "username", "is required with password")
        if self.username is None and self.token is None:
            raise _required(type(self), "username", "is required: set username and password (basic auth) or token")
        return self


def authorization(request: Request) -> tuple[str, str]:
    """The Authorization header's scheme (lower case) and value."""
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    return scheme.lower(), value.strip()


def check_basic_or_token(request: Request, presented_token: str | None, where: str) -> None:
    """Every credential the request presents must be right, and it must present one this source has:
    the token (`presented_token`, read from `where`) or the basic auth pair."""
    config: dict[str, Any] = request.config
    username, password, token = config.get("username"), config.get("password"), config.get("token")
    if token is None and (username is None or password is None):
        raise Refused("not_configured", "this source has no credentials configured")
    accepted = False
    if token is not None and presented_token is not None:
        if not same(presented_token, token):
            raise Refused("invalid_auth", f"the token in {where} is wrong")
        accepted = True
    if username is not None and password is not None and authorization(request)[0] == "basic":
        check_basic_auth(request, username, password)
        accepted = True
    if not accepted:
        expected = f"basic authentication or the token in {where}" if token is not None else "basic authentication"
        raise Refused("missing_auth", f"{expected} is required")


# --- diagnostics ---------------------------------------------------------------------------------

_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")


def enhanced_status(text: Any) -> str | None:
    """The first RFC 3463 enhanced status code in a diagnostic ("smtp;550 5.1.1 user unknown" → "5.1.1")."""
    if not isinstance(text, str):
        return None
    match = _STATUS.search(text)
    return match.group(1) if match else None


def reply_code(text: Any) -> int | None:
    """The SMTP reply code in a diagnostic, also where a `smtp;` prefix is glued to it ("smtp;550 ...")."""
    return smtp_code(text.replace(";", " ")) if isinstance(text, str) else smtp_code(text)


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
