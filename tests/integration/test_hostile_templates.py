"""Templates come from API clients: one that loops for ever or builds a gigabyte string fails its own
message with a reason naming the limit, while the API and every other message carry on."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.runtime import create_app
from tests.conftest import Api, make_key, wait_until
from tests.integration.test_send_api import free_port, message, received, wait_types

DOUBLING = "{% assign s = 'ab' %}{% for i in (1..34) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}"
# Each sequential loop stays under the loop-iteration limit; together they burn many CPU seconds.
CPU_BURNER = "{% for i in (1..99999) %}{% assign x = 'abc' | upcase | downcase | append: i %}{% endfor %}" * 50


async def _api(database: Any, settings: Any, aiohttp_client: Any, smtp: Any, cpu_seconds: float) -> Api:
    _, port = smtp
    http_port = free_port()
    s = settings.model_copy(update={
        "mail_url": f"smtp://127.0.0.1:{port}?timeout=5", "public_url": f"http://127.0.0.1:{http_port}",
        "render_cpu_seconds": cpu_seconds, "render_processes": 1,
    })  # fmt: skip
    client = await aiohttp_client(create_app(s, database=database), server_kwargs={"port": http_port})
    return Api(client, await make_key(database, "acme"))


@pytest.fixture
async def bounded_api(database, settings, aiohttp_client, smtp) -> Api:
    return await _api(database, settings, aiohttp_client, smtp, cpu_seconds=0.5)


@pytest.fixture
async def slow_render_api(database, settings, aiohttp_client, smtp) -> Api:
    return await _api(database, settings, aiohttp_client, smtp, cpu_seconds=5.0)


def _send(text: str, **attributes: Any) -> dict[str, Any]:
    return {
        "recipient": {"to": "a@example.com", "attributes": attributes},
        "from": "s@example.com",
        "subject": "s",
        "text": text,
    }


async def _failed(api: Api, key: str) -> dict[str, Any]:
    body = await wait_types(api, key, "failed")
    assert body["status"] == "failed"
    return next(e for e in body["events"] if e["type"] == "failed")["data"]


@pytest.mark.parametrize(
    ("template", "attributes", "limit"),
    [
        ("{% assign r = (1..attributes.n) %}{{ r | join: ',' | size }}", {"n": 20_000_000}, "value size limit"),
        ("{% assign r = (1..attributes.n) %}{{ r | join: ',' }}", {"n": 10_000_000}, "value size limit"),
        (DOUBLING, {}, "value size limit"),
        (CPU_BURNER, {}, "CPU time limit"),
    ],
    ids=["join-20M-range", "join-10M-range", "append-doubling", "cpu-burner"],
)
async def test_a_template_over_a_limit_fails_its_message_with_status_code_4_naming_the_limit(
    bounded_api: Api, smtp: Any, template: str, attributes: dict[str, Any], limit: str
) -> None:
    assert (await bounded_api.post("/v1/messages/hostile-1", _send(template, **attributes)))[0] == 202
    assert (await bounded_api.post("/v1/messages/benign-1", _send("hello {{ attributes.n }}", n=7)))[0] == 202
    data = await _failed(bounded_api, "hostile-1")
    assert data["statusCode"] == 4
    assert limit in data["reason"]
    assert (await wait_types(bounded_api, "benign-1", "sent"))["status"] == "sent"
    assert [m["Subject"] for m in received(smtp)] == ["s"]


async def test_a_literal_range_over_the_value_limit_is_refused_when_saved(bounded_api: Api) -> None:
    definition = {
        "definitionKey": "huge",
        "name": "huge",
        "content": {"from": "s@example.com", "subject": "s", "text": "{% assign r = (1..20000000) %}{{ r | size }}"},
    }
    status, body = await bounded_api.post("/v1/definitions", definition)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_template"
    assert body["error"]["field"] == "content.text"
    assert "value size limit" in body["error"]["message"]
    status, body = await bounded_api.post("/v1/messages/inline-huge", _send("{{ (1..20000000) | size }}"))
    assert (status, body["error"]["field"]) == (400, "text")


async def test_the_api_answers_while_a_template_renders(slow_render_api: Api, database: Any) -> None:
    """The render runs in another process: an event recorded during it is stored before the render
    ends, and the message is still unfinished when that request has been answered."""
    api = slow_render_api
    assert (await api.post("/v1/messages/slow-1", _send(CPU_BURNER)))[0] == 202

    async def leased() -> bool:
        return bool(await database.pool.fetchval("SELECT lease_owner IS NOT NULL FROM messages"))

    await wait_until(leased)
    status, _ = await api.post("/v1/events", {"type": "sent", "messageKey": "marker-1"})
    assert status == 201
    assert (await message(api, "slow-1"))["status"] == "queued"
    data = await _failed(api, "slow-1")
    assert "CPU time limit" in data["reason"]
    order = await database.pool.fetch("SELECT message_key FROM events WHERE type IN ('sent', 'failed') ORDER BY id")
    assert [r["message_key"] for r in order] == ["marker-1", "slow-1"]
