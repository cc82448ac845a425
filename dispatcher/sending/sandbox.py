"""Rendering untrusted templates away from the event loop, bounded in CPU time, value size and memory.

A `Sandbox` keeps a few child processes (`python -m dispatcher.sending.sandbox`), each rendering one
message at a time. A template that loops for seconds uses a child's CPU, never the loop that serves
the API and delivers webhooks.

    parent: take an idle child → send the request → await the answer (wall-clock backstop) → give back
    child:  read request → arm a CPU timer → render every field → disarm → answer

Limits, each named in the error a message fails with:
- value size: every filter's input and result (``templates.py``), refused before a ten-million-item
  join runs; literal ranges over it are refused when the template is saved;
- CPU time: ``setitimer(ITIMER_PROF)`` in the child; the child answers and exits;
- memory: ``RLIMIT_AS`` in the child, as a backstop for what the value limit cannot see.

A child that went over a limit, timed out or died is replaced; the messages it was not rendering
are unaffected. Frames on the pipes are a 4-byte length and a pickle: both ends are this module.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pickle
import resource
import signal
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, BinaryIO

from dispatcher.sending.errors import TemplateError, TemplateLimitError

__all__ = ["RenderLimits", "Sandbox"]

_HEADER = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class RenderLimits:
    cpu_seconds: float = 2.0
    max_value: int = 1024 * 1024
    memory_mb: int = 1024


# A request: ({field: (source, html)}, attributes, contactKey, to). The parent sends a list of them in
# one frame; the child answers each in its own frame, in order: (kind, value, spoiled), where kind is
# "ok" ({field: text}), "error" (an ordinary template error) or "limit". After a CPU or memory limit
# (spoiled) the child answers the rest of the list and exits.
Fields = Mapping[str, tuple[str, bool]]
Request = tuple[dict[str, tuple[str, bool]], dict[str, Any], str | None, str, dict[str, Any]]
BATCH = 50  # most requests in one frame: a claim of 100 messages is two round trips, one per child


@dataclass(slots=True)
class _Call:
    request: Request
    future: asyncio.Future[dict[str, str]]


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc

    def send(self, requests: list[Request]) -> None:
        assert self.proc.stdin is not None
        body = pickle.dumps(requests)
        self.proc.stdin.write(_HEADER.pack(len(body)) + body)

    async def answer(self, timeout: float) -> tuple[str, Any, bool]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            await self.proc.stdin.drain()
            (size,) = _HEADER.unpack(await self.proc.stdout.readexactly(_HEADER.size))
            answer: tuple[str, Any, bool] = pickle.loads(await self.proc.stdout.readexactly(size))
        return answer

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        await self.proc.stdout.read()  # to the end of the pipe, which closes its transport
        await self.proc.wait()


class Sandbox:
    """A pool of render processes. ``render`` may be called from many tasks at once: calls made
    together travel together, up to ``BATCH`` to a process, so a claim costs a round trip per child."""

    def __init__(self, limits: RenderLimits, processes: int = 2):
        self.limits, self.processes = limits, processes
        self._idle: list[_Worker] = []
        self._pending: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._all: set[_Worker] = set()
        self._scheduled = self._closing = False

    async def start(self) -> None:
        self._idle = list(await asyncio.gather(*(self._spawn() for _ in range(self.processes))))

    async def aclose(self) -> None:
        """Stop every child; a render in progress fails (its message's lease expires)."""
        self._closing = True
        for worker in self._all:  # busy ones: their task sees the pipe end and cleans up
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(w.kill() for w in self._idle))
        self._idle.clear()
        for call in self._pending:
            call.future.cancel()

    async def _spawn(self) -> _Worker:
        limits = self.limits
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dispatcher.sending.sandbox", "--cpu-seconds", str(limits.cpu_seconds),
            "--max-value", str(limits.max_value), "--memory-mb", str(limits.memory_mb),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        worker = _Worker(proc)
        self._all.add(worker)
        return worker

    async def render(self, fields: Fields, attributes: Mapping[str, Any] | None, *, contact_key: str | None,
                     to: str, scope: Mapping[str, Any] | None = None) -> dict[str, str]:  # fmt: skip
        """Render every field for one recipient; raises ``TemplateError`` (``TemplateLimitError`` for a
        limit)."""
        request = (dict(fields), dict(attributes or {}), contact_key, to, dict(scope or {}))
        call = _Call(request, asyncio.get_running_loop().create_future())
        self._pending.append(call)
        if not self._scheduled:  # once per loop iteration, so the calls of one claim share frames
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)
        return await call.future

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._pending and self._idle and not self._closing:
            share = -(-len(self._pending) // len(self._idle))  # spread over the idle processes
            chunk, self._pending = self._pending[: min(share, BATCH)], self._pending[min(share, BATCH) :]
            task = asyncio.create_task(self._run(self._idle.pop(), chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, worker: _Worker, chunk: list[_Call]) -> None:
        """Answers arrive one by one, so a child that stops answering costs only the request it was on;
        the rest go back to the queue. The wall-clock backstop covers a child stuck where its CPU timer
        cannot fire."""
        backstop, healthy, spoiled, done = self.limits.cpu_seconds * 3 + 5.0, False, False, 0
        try:
            worker.send([c.request for c in chunk])
            for call in chunk:
                kind, value, limit_hit = await worker.answer(backstop)
                done += 1
                spoiled = spoiled or limit_hit
                _settle(call.future, kind, value)
            healthy = not spoiled  # otherwise the child has exited after its last answer
        except TimeoutError:
            _settle(chunk[done].future, "limit", f"render time limit exceeded: no answer in {backstop:g} s")
            done += 1
        except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError):
            _settle(chunk[done].future, "limit", "memory limit exceeded: the render process ended")
            done += 1
        finally:
            self._pending[:0] = [c for c in chunk[done:] if not c.future.done()]
            await self._give_back(worker, healthy)

    async def _give_back(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            self._all.discard(worker)
            await worker.kill()
            if self._closing:
                return
            worker = await self._spawn()
        self._idle.append(worker)
        self._dispatch()


def _settle(future: asyncio.Future[dict[str, str]], kind: str, value: Any) -> None:
    if future.done():  # its caller was cancelled
        return
    if kind == "ok":
        future.set_result(value)
    else:
        future.set_exception(TemplateLimitError(value) if kind == "limit" else TemplateError(value))


# --- the child -----------------------------------------------------------------------------------


class _CpuLimit(BaseException):
    """Raised by the CPU timer's signal handler; a BaseException so no template code swallows it."""


def _on_cpu_limit(_signum: int, _frame: FrameType | None) -> None:
    raise _CpuLimit


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _answer(stream: BinaryIO, answer: tuple[str, Any, bool]) -> None:
    body = pickle.dumps(answer)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _render_one(request: Request, limits: RenderLimits) -> tuple[str, Any, bool]:
    """(kind, value, whether the process must be replaced)."""
    from dispatcher.sending.templates import render

    fields, attributes, contact_key, to, scope = request
    signal.setitimer(signal.ITIMER_PROF, limits.cpu_seconds)
    try:
        out = {
            name: render(
                source, attributes, contact_key=contact_key, to=to, html=html, max_value=limits.max_value, scope=scope
            )
            for name, (source, html) in fields.items()
        }
    except _CpuLimit:
        return "limit", f"CPU time limit exceeded: rendering took more than {limits.cpu_seconds:g} s", True
    except MemoryError:
        return "limit", f"memory limit exceeded: rendering needed more than {limits.memory_mb} MB", True
    except TemplateLimitError as exc:
        return "limit", exc.message, False
    except TemplateError as exc:
        return "error", exc.message, False
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    return "ok", out, False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dispatcher.sending.sandbox")
    parser.add_argument("--cpu-seconds", type=float, required=True)
    parser.add_argument("--max-value", type=int, required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    args = parser.parse_args(argv)
    limits = RenderLimits(args.cpu_seconds, args.max_value, args.memory_mb)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a child stops
    signal.signal(signal.SIGPROF, _on_cpu_limit)
    import dispatcher.sending.templates  # noqa: F401 - import before the memory limit applies

    cap = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            (size,) = _HEADER.unpack(_read(stdin, _HEADER.size))
            requests = pickle.loads(_read(stdin, size))
        except EOFError:
            return
        spoiled = False  # a CPU or memory limit interrupted the renderer somewhere: do not keep it
        for request in requests:
            kind, value, limit_hit = _render_one(request, limits)
            spoiled = spoiled or limit_hit
            _answer(stdout, (kind, value, limit_hit))
        if spoiled:
            return


if __name__ == "__main__":
    main()
