"""A webhook receiver to try dispatcher with: it verifies every request's Standard Webhooks signature with
the `standardwebhooks` package and prints what it got.

    .venv/bin/pip install standardwebhooks
    .venv/bin/python examples/receiver.py --secret whsec_... [--port 9000] [--api URL --key KEY]

The secret is the `signingSecret` that `POST /v1/callbacks` answered (or WEBHOOK_SECRET in the
environment). Requests whose signature does not verify are answered 400 and printed as rejected.

Given the API's URL and a key, the receiver also completes the ownership handshake itself: when the
verification request reaches it, it sends the key it carries to `POST /v1/callbacks/{id}/verify` before
answering, so the callback is `active` by the time dispatcher sees the answer. Without them it prints the
command that completes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def say(*parts: object) -> None:
    print(" ".join(["receiver:", *map(str, parts)]), flush=True)  # one write: lines never interleave


class Receiver:
    def __init__(self, secret: str, api: str | None, key: str | None):
        self.hook = Webhook(secret)
        self.api = api.rstrip("/") if api else None
        self.key = key

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = self.hook.verify(body, dict(request.headers))  # signature, and a timestamp within 5 min
        except WebhookVerificationError as exc:
            say(f"rejected a request whose signature does not verify ({exc})")
            return web.Response(status=400)
        if isinstance(payload, dict) and "verificationKey" in payload:
            return await self.handshake(payload["callbackId"], payload["verificationKey"])
        webhook_id = request.headers["webhook-id"]
        for event in payload if isinstance(payload, list) else [payload]:
            data = event["data"]
            who = data.get("recipient") or ""
            say(f"{event['type']} {data.get('messageKey', '')} {who} (signature verified, webhook-id {webhook_id})")
        return web.Response(status=204)

    async def handshake(self, callback_id: str, verification_key: str) -> web.Response:
        if not (self.api and self.key):
            say(f"verification request for {callback_id} (signature verified); complete it with:")
            say(
                f'  curl -s $API/v1/callbacks/{callback_id}/verify -H "Authorization: Bearer $KEY" '
                f"-H 'Content-Type: application/json' -d '{{\"verificationKey\": \"{verification_key}\"}}'"
            )
            return web.Response(status=204)
        url = f"{self.api}/v1/callbacks/{callback_id}/verify"
        headers = {"Authorization": f"Bearer {self.key}"}
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json={"verificationKey": verification_key}, headers=headers) as resp:
                answer: Any = await resp.json(content_type=None)
        if resp.status != 200:
            say(f"verification request for {callback_id}: the API refused the key: {resp.status} {answer}")
            return web.Response(status=500)
        say(f"verification request for {callback_id} (signature verified): callback is {answer['status']}")
        return web.Response(status=204)


async def serve(receiver: Receiver, host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post("/{path:.*}", receiver.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        say(f"listening on http://{host}:{port}/")
        await asyncio.Event().wait()  # until interrupted
    finally:
        await runner.cleanup()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--secret", default=os.environ.get("WEBHOOK_SECRET"), help="whsec_... (default: $WEBHOOK_SECRET)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--api", help="dispatcher's URL, to complete the ownership handshake")
    p.add_argument("--key", help="an API key with the callbacks:manage scope, for the same")
    args = p.parse_args()
    if not args.secret or not args.secret.startswith("whsec_"):
        p.error("give the callback's signing secret (whsec_...) with --secret or WEBHOOK_SECRET")
    try:
        asyncio.run(serve(Receiver(args.secret, args.api, args.key), args.host, args.port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"receiver: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
