"""Liquid templating for message content.

Owns the Liquid environments (one HTML-escaping, one plain), the parse cache, and the
variables a template can see: ``attributes.*`` and ``recipient.to`` /
``recipient.contactKey``. Templates come from API clients, so the environment is
bounded: no loader (``include``/``render`` are not even tags), loop and output limits,
and unknown filters are refused when the template is saved rather than when it is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from liquid import BoundTemplate, Environment
from liquid.exceptions import LiquidError

from dispatcher.sending.errors import TemplateError

__all__ = ["parse_template", "render"]


class _BoundedEnvironment(Environment):
    # Generous for receipts with many lines, small enough that a hostile template
    # cannot pin a worker or build a gigabyte string.
    loop_iteration_limit = 100_000
    output_stream_limit = 5 * 1024 * 1024
    context_depth_limit = 30

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        # Partials would read other templates by name; there is nothing to read and
        # refusing them at parse time gives a clearer error than a failed send later.
        for tag in ("include", "render"):
            self.tags.pop(tag, None)


_HTML_ENV = _BoundedEnvironment(autoescape=True)
_TEXT_ENV = _BoundedEnvironment(autoescape=False)


def _describe(exc: LiquidError) -> str:
    message = exc.message or exc.__class__.__name__
    token = exc.token
    if token is None:
        return str(message)
    before = token.source[: token.start_index]
    line = before.count("\n") + 1
    column = token.start_index - (before.rfind("\n") + 1) + 1
    return f"{message} (line {line}, column {column})"


@lru_cache(maxsize=1024)
def _parse(source: str, html: bool) -> BoundTemplate:
    env = _HTML_ENV if html else _TEXT_ENV
    try:
        template = env.from_string(source)
        # Filters are only looked up at render time; checking them here turns a send-time
        # failure into a validation error on the definition.
        unknown = sorted(set(template.analyze(include_partials=False).filters) - set(env.filters))
    except LiquidError as exc:
        raise TemplateError(_describe(exc)) from exc
    if unknown:
        raise TemplateError(f"unknown filter {unknown[0]!r}")
    return template


def parse_template(source: str, *, html: bool = False) -> BoundTemplate:
    """Parse ``source`` (cached) or raise ``TemplateError`` with a one-line message."""
    return _parse(source, html)


def render(
    source: str,
    attributes: Mapping[str, Any] | None,
    *,
    contact_key: str | None,
    to: str,
    html: bool = False,
) -> str:
    """Render ``source`` for one recipient.

    With ``html=True`` every ``{{ … }}`` output is HTML-escaped (the template's own
    markup is not); use it for the HTML body only. Undefined variables render as empty
    strings, matching what senders expect from other transactional APIs.
    """
    template = _parse(source, html)
    try:
        return template.render(
            attributes=dict(attributes or {}),
            recipient={"to": to, "contactKey": contact_key},
        )
    except LiquidError as exc:
        raise TemplateError(_describe(exc)) from exc
