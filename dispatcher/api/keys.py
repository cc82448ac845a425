"""AppKeys: everything the app builds once and shares, kept on the Application (no module globals)."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from dispatcher.accounts import Principal
from dispatcher.crypto import Keyring
from dispatcher.db import Database
from dispatcher.group_commit import GroupWriter
from dispatcher.inbound.ingest import Fetcher
from dispatcher.metrics import Metrics
from dispatcher.settings import Settings
from dispatcher.watchdog import DatabaseWatch

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
DB_WATCH = web.AppKey("db_watch", DatabaseWatch)  # dispatcher/watchdog.py: /healthz reads it
SERVICES = web.AppKey("services", dict[str, Any])
REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
METRICS = web.AppKey("metrics", Metrics)
KEYRING = web.AppKey("keyring", Keyring)
OUTBOUND = web.AppKey("outbound", aiohttp.ClientSession)
# group commit (dispatcher/group_commit.py): POST /v1/events, POST /v1/messages/{key}, POST /in/{sourceId}
EVENT_WRITER = web.AppKey("event_writer", GroupWriter)
SEND_WRITER = web.AppKey("send_writer", GroupWriter)
INBOUND_WRITER = web.AppKey("inbound_writer", GroupWriter)  # POST /in/{sourceId}
SOURCE_FETCHER = web.AppKey("source_fetcher", Fetcher)  # SNS certificates and confirmations
