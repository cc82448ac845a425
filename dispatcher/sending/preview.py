"""A definition's content rendered with sample attributes, as the sender would render it: in a sandbox
process, under the same CPU, value-size and memory limits (`sandbox.py`). Tracking links and the
MIME message are left out: a preview shows what the templates make of the attributes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dispatcher.sending.models import DefinitionContent
from dispatcher.sending.sandbox import RenderLimits, Sandbox

FIELDS = ("from", "replyTo", "subject", "preheader", "html", "text")


async def render_preview(
    content: DefinitionContent, attributes: Mapping[str, Any], *, to: str, contact_key: str | None,
    limits: RenderLimits,
) -> dict[str, str | None]:  # fmt: skip
    """Every field the content has, rendered; raises TemplateError (TemplateLimitError for a limit).

    A sandbox of its own, started and stopped per preview: previews are rare, and a template that
    spoils its process (a CPU or memory limit) never touches the sender's."""
    sources = content.model_dump(by_alias=True, exclude_none=True)
    fields = {name: (sources[name], name == "html") for name in FIELDS if name in sources}
    out: dict[str, str | None] = dict.fromkeys(FIELDS)
    if not fields:
        return out
    sandbox = Sandbox(limits, processes=1)
    await sandbox.start()
    try:
        out.update(await sandbox.render(fields, attributes, contact_key=contact_key, to=to))
    finally:
        await sandbox.aclose()
    return out
