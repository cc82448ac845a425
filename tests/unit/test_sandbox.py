"""The render sandbox: real child processes, each limit named in the error, and a pool that heals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dispatcher.sending.errors import TemplateError, TemplateLimitError
from dispatcher.sending.sandbox import RenderLimits, Sandbox

DOUBLING = "{% assign s = 'ab' %}{% for i in (1..40) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}"


async def _sandbox(limits: RenderLimits) -> AsyncIterator[Sandbox]:
    sandbox = Sandbox(limits, processes=1)
    await sandbox.start()
    yield sandbox
    await sandbox.aclose()


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async for s in _sandbox(RenderLimits(cpu_seconds=0.5)):
        yield s


@pytest.fixture
async def loose_sandbox() -> AsyncIterator[Sandbox]:
    """No useful value limit: only the address-space cap stands between a template and the machine."""
    async for s in _sandbox(RenderLimits(cpu_seconds=30, max_value=10**12, memory_mb=300)):
        yield s


async def test_fields_render_for_the_recipient_with_html_escaping_only_in_html(sandbox: Sandbox) -> None:
    fields = {"text": ("Hi {{ attributes.name }}", False), "html": ("<p>{{ attributes.name }}</p>", True)}
    out = await sandbox.render(fields, {"name": "<Ada>"}, contact_key="c1", to="ada@example.com")
    assert out == {"text": "Hi <Ada>", "html": "<p>&lt;Ada&gt;</p>"}


async def test_an_ordinary_template_error_is_not_a_limit(sandbox: Sandbox) -> None:
    with pytest.raises(TemplateError) as info:
        await sandbox.render({"text": ("{{ 1 | divided_by: 0 }}", False)}, {}, contact_key=None, to="x")
    assert not isinstance(info.value, TemplateLimitError)
    assert "divide by 0" in info.value.message


async def test_value_and_cpu_limits_are_named_and_the_pool_carries_on(sandbox: Sandbox) -> None:
    with pytest.raises(TemplateLimitError, match="value size limit"):
        await sandbox.render({"text": (DOUBLING, False)}, {}, contact_key=None, to="x")
    burner = "{% for i in (1..99999) %}{% assign x = 'abc' | upcase | append: i %}{% endfor %}" * 40
    with pytest.raises(TemplateLimitError, match="CPU time limit"):
        await sandbox.render({"text": (burner, False)}, {}, contact_key=None, to="x")
    assert await sandbox.render({"text": ("ok", False)}, {}, contact_key=None, to="x") == {"text": "ok"}


async def test_the_memory_cap_stops_what_the_value_limit_lets_through(loose_sandbox: Sandbox) -> None:
    with pytest.raises(TemplateLimitError, match="memory limit"):
        await loose_sandbox.render({"text": (DOUBLING, False)}, {}, contact_key=None, to="x")
    assert await loose_sandbox.render({"text": ("ok", False)}, {}, contact_key=None, to="x") == {"text": "ok"}


async def test_messages_rendered_together_with_a_hostile_one_are_unaffected(sandbox: Sandbox) -> None:
    burner = "{% for i in (1..99999) %}{% assign x = 'abc' | upcase | append: i %}{% endfor %}" * 40
    sources = ["a {{ attributes.n }}", burner, "b {{ attributes.n }}", DOUBLING, "c {{ attributes.n }}"]
    results = await asyncio.gather(
        *(sandbox.render({"text": (s, False)}, {"n": 1}, contact_key=None, to="x") for s in sources),
        return_exceptions=True,
    )
    assert [r if isinstance(r, dict) else type(r).__name__ for r in results] == [
        {"text": "a 1"}, "TemplateLimitError", {"text": "b 1"}, "TemplateLimitError", {"text": "c 1"},
    ]  # fmt: skip
    assert "CPU time limit" in str(results[1]) and "value size limit" in str(results[3])
