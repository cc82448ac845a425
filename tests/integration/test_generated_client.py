"""A client generated from the served /openapi.json with openapi-python-client works: the generator reports no
warning (an inline model repeated under 200 and 201, or a schema it cannot build, makes it drop answers or
whole operations), and the generated code records an event and reads its message back over a real socket."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dispatcher.runtime import create_app
from tests.conftest import make_key

pytest.importorskip("openapi_python_client")
httpx = pytest.importorskip("httpx")
BIN = Path(sys.executable).parent


def generate(document: Path, package: Path) -> str:
    # the generator formats its output with ruff, which it looks up on PATH
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [BIN / "openapi-python-client", "generate", "--path", document, "--output-path", package, "--meta", "none"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


@pytest.fixture
async def served(database, settings, aiohttp_client, tmp_path) -> tuple[str, str, bytes]:
    client = await aiohttp_client(create_app(settings, database=database))
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    return str(client.make_url("")).rstrip("/"), await make_key(database, "acme", ["*"]), await resp.read()


@pytest.fixture
def generated(tmp_path, monkeypatch) -> Any:
    """Import a package generated in tmp_path under a name of its own, and forget it afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n == "dispatcher_client" or n.startswith("dispatcher_client.")]:
        del sys.modules[name]


async def test_generated_client_has_no_warnings_and_records_and_reads_a_message(served, generated) -> None:
    base_url, key, document = served
    (generated / "openapi.json").write_bytes(document)
    output = await asyncio.to_thread(generate, generated / "openapi.json", generated / "dispatcher_client")
    assert "warning" not in output.lower(), output

    importlib.invalidate_caches()
    client_mod = importlib.import_module("dispatcher_client")
    post_events = importlib.import_module("dispatcher_client.api.events.post_events")
    get_message = importlib.import_module("dispatcher_client.api.events.get_message")
    models = importlib.import_module("dispatcher_client.models")

    async with client_mod.AuthenticatedClient(base_url=base_url, token=key) as client:
        event = models.BouncedEvent.from_dict(
            {"type": "bounced", "messageKey": "order-1", "recipient": "ann@example.com",
             "data": {"bounceType": "hard", "smtpCode": 550, "mailbox": {"full": True}}}
        )  # fmt: skip
        recorded = await post_events.asyncio_detailed(client=client, body=event)
        assert recorded.status_code == 201, recorded.content
        assert isinstance(recorded.parsed, models.EventOut) and recorded.parsed.type_ == "bounced"

        read = await get_message.asyncio_detailed("order-1", client=client)
        assert read.status_code == 200, read.content
        message = read.parsed
        assert isinstance(message, models.MessageOut)
        assert (message.message_key, message.status) == ("order-1", "bounced")
        assert [e.type_ for e in message.events] == ["bounced"]
        assert message.events[0].data.to_dict()["mailbox"] == {"full": True}

        missing = await get_message.asyncio_detailed("no-such-message", client=client)
        assert missing.status_code == 404 and isinstance(missing.parsed, models.Error)
        assert missing.parsed.error.code == "not_found"
