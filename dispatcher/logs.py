"""structlog configuration: JSON lines in production, a readable console on a TTY; secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = {
    "authorization",
    "api_key",
    "key",
    "secret",
    "signing_secret",
    "signingsecret",
    "password",
    "token",
}
_SECRET_PATTERNS = re.compile(r"(dk_[A-Za-z0-9_-]{20,}|whsec_[A-Za-z0-9+/=]{10,})")


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: no API key or signing secret ever reaches a log sink."""
    for k, v in list(event.items()):
        if k.lower() in _SECRET_KEYS:
            event[k] = "[redacted]"
        elif isinstance(v, str) and ("dk_" in v or "whsec_" in v):
            event[k] = _SECRET_PATTERNS.sub("[redacted]", v)
    return event


def configure(level: str = "info", fmt: str = "auto") -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
