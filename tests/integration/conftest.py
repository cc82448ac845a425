"""Fixtures shared by the integration tests that send mail."""

from __future__ import annotations

from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.integration.test_smtp_transport import SwitchableHandler, free_port


@pytest.fixture
def smtp() -> Any:
    """A real SMTP server (aiosmtpd) whose answers the test decides: (handler, port)."""
    handler = SwitchableHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()
