"""The running service against its own /openapi.json, with schemathesis: for every documented operation,
requests generated from the document (valid ones, then invalid ones) never get a 5xx, and every answer
(status code, content type, headers, body) is one the document declares.

schemathesis loads ASGI/WSGI apps in-process but not aiohttp, so the app runs on a real socket on 127.0.0.1
and schemathesis calls it over HTTP (with `requests`, from a worker thread, so the event loop that serves
the app stays free). Generation is derandomized: a failure reproduces on every run."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from dispatcher.api import openapi
from dispatcher.api.app import routers
from dispatcher.runtime import create_app
from tests.conftest import make_key

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from schemathesis import GenerationMode  # noqa: E402
from schemathesis import checks as st_checks  # noqa: E402

EXAMPLES_PER_OPERATION = 10
# Formats the document names for rules no pattern can state: generate values that follow them, as schemathesis
# does for the formats it knows (email, date-time, uri).
schemathesis.openapi.format(
    "liquid-template", hypothesis.strategies.text(hypothesis.strategies.characters(exclude_characters="{}%\x00"))
)
schemathesis.openapi.format(
    "mailbox",
    hypothesis.strategies.from_regex(
        r"(?:[A-Za-z]{1,20} <ADDR>|ADDR)".replace("ADDR", r"[a-z0-9]{1,10}(?:\.[a-z0-9]{1,10})?@[a-z]{1,10}\.com"),
        fullmatch=True,
    ),
)


def _ecdsa_public_key(_: int) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


schemathesis.openapi.format("ecdsa-public-key", hypothesis.strategies.integers().map(_ecdsa_public_key))
# The same document the app serves (the test reads the served one; this copy only names the test cases).
DOCUMENT = openapi.build([r for router in routers() for r in router.routes])
OPERATIONS = [f"{method.upper()} {path}" for path, ops in DOCUMENT["paths"].items() for method in ops]

CONFORMANCE = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_headers_conformance,
    st_checks.response_schema_conformance,
]


def cases() -> list[Any]:
    out = []
    for path, ops in DOCUMENT["paths"].items():
        for method, op in ops.items():
            label = f"{method.upper()} {path}"
            out.append(pytest.param("valid", label, id=f"valid-{label}"))
            if op.get("parameters") or op.get("requestBody"):  # nothing to get wrong otherwise
                out.append(pytest.param("invalid", label, id=f"invalid-{label}"))
    return out


def exercise(doc: dict[str, Any], label: str, mode: str, base_url: str, headers: dict[str, str]) -> None:
    operation = schemathesis.openapi.from_dict(doc).find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served document"
    generation = GenerationMode.POSITIVE if mode == "valid" else GenerationMode.NEGATIVE
    strategy = operation.as_strategy(generation_mode=generation)

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        print_blob=False,
    )
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        assert response.status_code < 500, (response.status_code, response.text[:500])
        case.validate_response(response, headers=headers)  # every check schemathesis has

    try:
        run()
    except BaseExceptionGroup as group:  # schemathesis reports failures as a group: flatten it for the report
        raise AssertionError(str(group) + "\n" + "\n".join(map(str, group.exceptions))) from None


@pytest.fixture
async def served(database, settings, aiohttp_client) -> tuple[dict[str, Any], str, dict[str, str]]:
    client = await aiohttp_client(create_app(settings, database=database))
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    key = await make_key(database, "acme", ["*"])
    return doc, str(client.make_url("")).rstrip("/"), {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(("mode", "label"), cases())
async def test_operation_answers_generated_requests_without_5xx_and_as_documented(served, mode, label):
    doc, base_url, headers = served
    await asyncio.to_thread(exercise, doc, label, mode, base_url, headers)


# --- the known bugs, pinned with explicit requests ------------------------------------------------


def call_and_check(
    doc: dict[str, Any], label: str, base_url: str, headers: dict[str, str], check: Any, **kw: Any
) -> int:
    operation = schemathesis.openapi.from_dict(doc).find_operation_by_label(label)
    assert operation is not None
    case = operation.Case(media_type="application/json" if "body" in kw else None, **kw)
    response = case.call(base_url=base_url, headers=headers, timeout=10)
    case.validate_response(response, checks=[check], headers=headers)
    return response.status_code


@pytest.mark.parametrize(
    ("label", "request_kw"),
    [
        ("POST /v1/subscriptions", {"body": {"name": "s", "callbackId": "cb_999999", "eventTypes": ["sent"]}}),
        ("POST /v1/messages", {"body": {"definitionKey": "nope", "recipients": [{"to": "a@example.com"}]}}),
    ],
)
async def test_unknown_ids_in_a_body_or_query_answer_a_documented_404(served, label, request_kw):
    doc, base_url, headers = served
    status = await asyncio.to_thread(
        call_and_check, doc, label, base_url, headers, st_checks.status_code_conformance, **request_kw
    )
    assert status == 404


async def test_batch_of_events_answer_matches_its_documented_schema(served):
    doc, base_url, headers = served
    body = {"events": [{"type": "sent", "messageKey": "m-1"}, {"type": "opened", "messageKey": "m-1"}]}
    status = await asyncio.to_thread(
        call_and_check, doc, "POST /v1/events", base_url, headers, st_checks.response_schema_conformance, body=body
    )
    assert status == 201
