"""Run real `dispatcher` processes for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(data_dir: Path, database_url: str | None = None, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(
        DISPATCHER_DATA_DIR=str(data_dir),
        DISPATCHER_ALLOW_HTTP_CALLBACKS="true",
        DISPATCHER_ALLOWED_NETWORKS="127.0.0.0/8",
        DISPATCHER_LOG_FORMAT="json",
        DISPATCHER_RATE_LIMIT_PER_SECOND="0",
    )
    if database_url:
        env["DISPATCHER_DATABASE_URL"] = database_url
    env.update({f"DISPATCHER_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args], env=env, capture_output=True, text=True, timeout=60, cwd=cwd
    )


class Service:
    """`dispatcher serve` in its own process, stderr kept in a file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str, cwd: Path | None = None):
        self.port = free_port()
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", "serve", "--port", str(self.port), *args],
            env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=cwd,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 30) -> Service:
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
                try:
                    async with session.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text()


class Client:
    def __init__(self, base: str, key: str):
        self.base, self.key = base, key

    async def call(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with aiohttp.ClientSession() as s, s.request(method, self.base + path, json=json, headers=headers) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body


def first_key(output: str) -> str:
    keys = re.findall(r"^    (dk_\S+)$", output, re.MULTILINE)
    assert len(keys) == 1, output
    return keys[0]


async def register(client: Client, receiver: Any, batch: int = 1, name: str = "hook") -> tuple[str, str]:
    before = len(receiver.requests)
    status, cb = await client.call("POST", "/v1/callbacks", {"name": name, "url": receiver.url, "maxBatchSize": batch})
    assert status == 201, cb
    reqs = await receiver.wait_for(before + 1, events_only=False)
    key = reqs[before].json["verificationKey"]
    assert (await client.call("POST", f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": key}))[0] == 200
    sub = {"name": "all" if name == "hook" else f"{name}-all", "callbackId": cb["callbackId"], "eventTypes": ["*"]}
    assert (await client.call("POST", "/v1/subscriptions", sub))[0] == 201
    return cb["callbackId"], cb["signingSecret"]


class Ingest:
    """Clients posting one event per request until stopped, as an outage test needs: the keys answered
    2xx (`acknowledged`) and how many requests were refused or failed outright (`refused`). A status
    outside `allowed` (besides 2xx) fails the test when it stops."""

    def __init__(self, client: Client, prefix: str, *, allowed: frozenset[int] | None = None, pause: float = 0.005):
        self.client, self.prefix, self.allowed, self.pause = client, prefix, allowed, pause
        self.acknowledged: list[str] = []
        self.refused = 0
        self.unexpected: list[int] = []
        self._counter = 0
        self._posting = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, clients: int) -> Ingest:
        self._posting = True
        self._tasks = [asyncio.create_task(self._post_forever(), name=f"poster-{i}") for i in range(clients)]
        return self

    async def stop(self) -> None:
        """Stop posting and wait for the requests in flight (calling it again does nothing more)."""
        self._posting = False
        tasks, self._tasks = self._tasks, []
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert not self.unexpected, f"unexpected statuses: {sorted(set(self.unexpected))}"

    async def _post_forever(self) -> None:
        headers = {"Authorization": f"Bearer {self.client.key}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            while self._posting:
                self._counter += 1
                key = f"{self.prefix}-{self._counter}"
                try:
                    body = {"type": "sent", "messageKey": key}
                    async with session.post(self.client.base + "/v1/events", json=body, headers=headers) as resp:
                        await resp.read()
                        self._record(key, resp.status)
                except (aiohttp.ClientError, TimeoutError):
                    self.refused += 1
                await asyncio.sleep(self.pause)  # pacing, so the clients leave the service room to recover

    def _record(self, key: str, status: int) -> None:
        if 200 <= status < 300:
            self.acknowledged.append(key)
            return
        self.refused += 1
        if self.allowed is not None and status not in self.allowed:
            self.unexpected.append(status)
