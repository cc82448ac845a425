"""What the bench runs: PostgreSQL (embedded, or DISPATCHER_DATABASE_URL), a dedicated database for
the run, the `dispatcher serve` subprocess on a free port, and a small API client for it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

KEY_PREFIX = "    dk_"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


class Postgres:
    """A server and a fresh database `dispatcher_bench_<pid>` on it, dropped at stop()."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.server: Any = None
        self.admin_url = ""
        self.url = ""
        self.name = f"dispatcher_bench_{os.getpid()}"

    async def start(self) -> Postgres:
        external = os.environ.get("DISPATCHER_DATABASE_URL")
        if external:
            self.admin_url = external
        else:
            from dispatcher import db

            self.server = await asyncio.to_thread(db.start_embedded, self.tmp / "postgres")
            self.admin_url = self.server.get_uri()
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {self.name}")
        finally:
            await admin.close()
        self.url = with_database(self.admin_url, self.name)
        return self

    async def stop(self) -> None:
        if self.admin_url:
            try:
                admin = await asyncpg.connect(self.admin_url)
                try:
                    await admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
                finally:
                    await admin.close()
            except (OSError, asyncpg.PostgresError) as exc:
                print(f"bench: could not drop {self.name}: {exc}", file=sys.stderr)
        if self.server is not None:
            await asyncio.to_thread(self.server.cleanup)
            self.server = None

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url)


class Service:
    """`python -m dispatcher serve` with the bench's environment; output goes to files in tmp."""

    def __init__(self, tmp: Path, database_url: str, extra_env: dict[str, str] | None = None, split: bool = False):
        self.tmp, self.database_url, self.split = tmp, database_url, split
        self.worker: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = tmp / "service.stderr"
        self.key = ""

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DISPATCHER_DATABASE_URL=self.database_url,
            DISPATCHER_DATA_DIR=str(self.tmp / "data"),
            DISPATCHER_ALLOW_HTTP_CALLBACKS="true",
            DISPATCHER_ALLOWED_NETWORKS="127.0.0.0/8",
            DISPATCHER_RATE_LIMIT_PER_SECOND="0",
            DISPATCHER_PUBLIC_URL=self.url,
        )
        env.update(self.extra_env)
        # The raw baselines keep 50 requests in flight; the service gets the same in total over its
        # processes, so the ratio measures overhead rather than the per-callback politeness limit.
        processes = int(env.get("DISPATCHER_PROCESSES", "1")) or os.cpu_count() or 1
        env.setdefault("DISPATCHER_CALLBACK_CONCURRENCY", str(max(1, 50 // processes)))
        return env

    def _spawn(self, role: str = "all", port: int | None = None, name: str = "service") -> subprocess.Popen[bytes]:
        (self.tmp / "data").mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "dispatcher", "serve", "--port", str(port or self.port), "--role", role]
        with open(self.tmp / f"{name}.stderr", "wb") as err, open(self.tmp / f"{name}.stdout", "wb") as out:
            return subprocess.Popen(
                command,
                env=self.env(),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    async def start(self, timeout: float = 60.0) -> Service:
        # --split: an API process and a worker process, as deployed (`serve --role api|worker`),
        # so the service can use both cores; otherwise one `serve` doing both.
        self.proc = self._spawn("api" if self.split else "all")
        if self.split:
            self.worker = self._spawn("worker", free_port(), "worker")
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"dispatcher serve exited with {self.proc.returncode}:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"dispatcher serve not ready in {timeout:.0f}s:\n{self.log_tail()}")
                try:
                    async with session.get(self.url + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        self.key = self._printed_key() or await self._create_key()
        return self

    def _printed_key(self) -> str | None:
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            if line.startswith(KEY_PREFIX):
                return line.strip()
        return None

    async def _create_key(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dispatcher", "keys", "create", "--account", "default",
            env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"dispatcher keys create failed: {err.decode()}")
        return out.decode().strip().splitlines()[-1]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def stop(self) -> None:
        for proc in (self.proc, self.worker):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)


class Api:
    """JSON over HTTP with the service's key. Raises on an unexpected status."""

    def __init__(self, base: str, key: str, *, connections: int = 64):
        self.base = base
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections), json_serialize=lambda v: orjson.dumps(v).decode()
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201)) -> Any:
        data = orjson.dumps(body) if body is not None else None
        async with self.session.request(method, self.base + path, data=data, headers=self.headers) as r:
            raw = await r.read()
            if r.status not in ok:
                raise RuntimeError(f"{method} {path} -> {r.status}: {raw[:500]!r}")
            return orjson.loads(raw) if raw else None

    async def status(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = orjson.dumps(body) if body is not None else None
        async with self.session.request(method, self.base + path, data=data, headers=self.headers) as r:
            raw = await r.read()
            try:
                return r.status, orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                return r.status, raw.decode(errors="replace")
