"""Fixtures shared by integration tests: a real SMTP server, a signed-in console client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.console import Console
from tests.integration.test_smtp_transport import SwitchableHandler, free_port


@pytest.fixture
def smtp() -> Any:
    """A real SMTP server (aiosmtpd) whose answers the test decides: (handler, port)."""
    handler = SwitchableHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


@pytest.fixture
async def console(app_client: Any, api: Any) -> AsyncIterator[Console]:
    """The console in a client of its own, signed in with account acme's `*` key (a test module that
    needs a client not yet signed in defines its own `console`)."""
    c = Console(str(app_client.make_url("/")))
    status, _ = await c.sign_in(api.key)
    assert status == 303
    yield c
    await c.close()
