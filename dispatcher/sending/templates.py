"""Liquid templating for message content.

Owns the Liquid environments (one HTML-escaping, one plain, per value-size limit), the parse cache,
the variables a template can see (``attributes.*`` and ``recipient.to`` / ``recipient.contactKey``)
and the limits on what a template may build. Templates come from API clients, so the environment is
bounded: no loader (``include``/``render`` are not even tags), loop and output limits, every filter's
input and result held under ``max_value``, and unknown filters or over-limit literal ranges refused
when the template is saved rather than when it is sent. CPU time is bounded by the process that
renders (``sending/sandbox.py``), never the event loop's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

from liquid import BoundTemplate, Environment, RenderContext
from liquid.ast import Node
from liquid.builtin.expressions.primitive import IntegerLiteral, RangeLiteral
from liquid.exceptions import LiquidError

from dispatcher.sending.errors import TemplateError, TemplateLimitError

__all__ = ["DEFAULT_MAX_VALUE", "check_literal_ranges", "parse_template", "render"]

DEFAULT_MAX_VALUE = 1024 * 1024  # characters in a string, items in a sequence


def value_size(value: object, limit: int) -> int:
    """A value's size as a template builds it: characters of a string, items of a sequence plus the
    characters of its strings. Stops counting past ``limit``, so measuring is bounded too."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3  # about the number of decimal digits
    if isinstance(value, range | Mapping):
        return len(value)
    if isinstance(value, list | tuple):
        total = len(value)
        for item in value:
            if total > limit:
                break
            total += value_size(item, limit - total) if isinstance(item, str | list | tuple) else 0
        return total
    return 0


class _SizeChecked:
    """A filter whose input, arguments and result are held under the value limit. Checking the input
    first matters: ``join`` on a ten-million-item range must be refused before it runs."""

    def __init__(self, name: str, func: Callable[..., Any], limit: int):
        self.name, self.func, self.limit = name, func, limit
        for attr in ("with_context", "with_environment", "validate"):
            if hasattr(func, attr):
                setattr(self, attr, getattr(func, attr))

    def _check(self, value: object) -> None:
        if value_size(value, self.limit) > self.limit:
            raise TemplateLimitError(
                f"value size limit exceeded: filter '{self.name}' met a value over {self.limit} characters or items"
            )

    def __call__(self, left: object, *args: Any, **kwargs: Any) -> Any:
        self._check(left)
        for arg in args:
            self._check(arg)
        result = self.func(left, *args, **kwargs)
        self._check(result)
        return result


class _BoundedEnvironment(Environment):
    # Generous for receipts with many lines, small enough that a hostile template
    # cannot pin a worker or build a gigabyte string.
    loop_iteration_limit = 100_000
    output_stream_limit = 5 * 1024 * 1024
    context_depth_limit = 30

    def __init__(self, *, autoescape: bool, max_value: int):
        self.max_value = max_value
        super().__init__(autoescape=autoescape)

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        # Partials would read other templates by name; there is nothing to read and
        # refusing them at parse time gives a clearer error than a failed send later.
        for tag in ("include", "render"):
            self.tags.pop(tag, None)
        for name, func in list(self.filters.items()):
            self.filters[name] = _SizeChecked(name, func, self.max_value)


@lru_cache(maxsize=8)
def _environment(html: bool, max_value: int) -> _BoundedEnvironment:
    return _BoundedEnvironment(autoescape=html, max_value=max_value)


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
def _parse(source: str, html: bool, max_value: int) -> BoundTemplate:
    env = _environment(html, max_value)
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


def parse_template(source: str, *, html: bool = False, max_value: int = DEFAULT_MAX_VALUE) -> BoundTemplate:
    """Parse ``source`` (cached) or raise ``TemplateError`` with a one-line message."""
    return _parse(source, html, max_value)


def _nodes(nodes: Iterable[Node], context: RenderContext) -> Iterable[Node]:
    for node in nodes:
        yield node
        yield from _nodes(node.children(context, include_partials=False), context)


def check_literal_ranges(source: str, *, max_value: int) -> None:
    """Refuse what is known before rendering: a literal range such as ``(1..20000000)`` longer than
    ``max_value`` items. Ranges with variable bounds are held by the filters and the loop limit."""
    template = parse_template(source, max_value=max_value)
    context = RenderContext(template)
    for node in _nodes(template.nodes, context):
        pending = list(node.expressions())
        while pending:
            expr = pending.pop()
            pending.extend(expr.children())
            if isinstance(expr, RangeLiteral) and isinstance(expr.start, IntegerLiteral):
                if isinstance(expr.stop, IntegerLiteral) and expr.stop.value - expr.start.value + 1 > max_value:
                    raise TemplateError(
                        f"value size limit exceeded: range {expr} has more than {max_value} items (line "
                        f"{expr.token.source[: expr.token.start_index].count(chr(10)) + 1})"
                    )


def render(
    source: str,
    attributes: Mapping[str, Any] | None,
    *,
    contact_key: str | None,
    to: str,
    html: bool = False,
    max_value: int = DEFAULT_MAX_VALUE,
    scope: Mapping[str, Any] | None = None,
) -> str:
    """Render ``source`` for one recipient. ``scope``: more top-level variables, for a compatibility
    route's own names (Customer.io's ``trigger`` and ``customer``).

    With ``html=True`` every ``{{ … }}`` output is HTML-escaped (the template's own
    markup is not); use it for the HTML body only. Undefined variables render as empty
    strings, matching what senders expect from other transactional APIs. Raises
    ``TemplateLimitError`` when a value the template builds goes over ``max_value``.
    """
    template = parse_template(source, html=html, max_value=max_value)
    try:
        return template.render(
            **dict(scope or {}),
            attributes=dict(attributes or {}),
            recipient={"to": to, "contactKey": contact_key},
        )
    except LiquidError as exc:
        raise TemplateError(_describe(exc)) from exc
