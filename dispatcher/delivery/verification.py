"""The ownership handshake's request: a callback's verification key POSTed to its URL, signed like every
request and sent through the SSRF guard. What the handshake's state becomes is the callbacks' concern."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

import aiohttp
import orjson

from dispatcher import ids
from dispatcher.delivery import outbound, signing


async def send(
    session: aiohttp.ClientSession, keys: Sequence[str], *, callback_id: int, url: str, key: str,
    allowed: Sequence[outbound.Network],
) -> outbound.Response:  # fmt: skip
    """POST {callbackId, verificationKey} to the URL, signed with `keys` (`whsec_`/`whsk_`) so the receiver can trust it."""
    body = orjson.dumps({"callbackId": ids.encode("cb", callback_id), "verificationKey": key})
    msg_id = f"verify_{callback_id}_{secrets.token_hex(4)}"
    headers = signing.headers(keys, msg_id, int(time.time()), body, outbound.USER_AGENT)
    return await outbound.post(session, url, body, headers, allowed)
