"""Domain exceptions raised by the sending layer.

The API layer maps these to JSON error bodies; the transport never raises them for
delivery outcomes (those are data, see ``transport.SendResult``).
"""

from __future__ import annotations


class SendingError(Exception):
    """Base class for every error raised by ``dispatcher.sending``."""


class TemplateError(SendingError):
    """A Liquid template could not be parsed or rendered.

    ``message`` is a single readable line (with line and column when known) that is
    safe to return to the API client.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MessageBuildError(SendingError):
    """Rendered content cannot become a valid email (bad address, header injection)."""


class TemplateLimitError(TemplateError):
    """Rendering went over a configured limit (value size, CPU time, memory); the message names it."""
