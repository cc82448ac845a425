"""The provider adapters, by the name a source's `provider` uses."""

from __future__ import annotations

from dispatcher.inbound.adapter import Adapter
from dispatcher.inbound.providers.sendgrid import SendGrid

ADAPTERS: dict[str, Adapter] = {a.provider: a for a in (SendGrid(),)}
