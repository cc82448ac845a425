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


# A request: {field: (source, html)}, attributes, contactKey, to. An answer: ("ok", {field: text}),
# ("error", message) for an ordinary template error, or ("limit", message) after which the child exits.
Fields = Mapping[str, tuple[str, bool]]


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc

    async def call(self, request: bytes, timeout: float) -> tuple[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(_HEADER.pack(len(request)) + request)
        async with asyncio.timeout(timeout):
            await self.proc.stdin.drain()
            (size,) = _HEADER.unpack(await self.proc.stdout.readexactly(_HEADER.size))
            answer: tuple[str, Any] = pickle.loads(await self.proc.stdout.readexactly(size))
        return answer

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


class Sandbox:
    """A pool of render processes. ``render`` is safe to call from many tasks at once."""

    def __init__(self, limits: RenderLimits, processes: int = 2):
        self.limits, self.processes = limits, processes
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()

    async def start(self) -> None:
        for worker in await asyncio.gather(*(self._spawn() for _ in range(self.processes))):
            self._idle.put_nowait(worker)

    async def aclose(self) -> None:
        await asyncio.gather(*(w.kill() for w in list(self._all)))
        self._all.clear()

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
                     to: str) -> dict[str, str]:  # fmt: skip
        """Render every field for one recipient; raises ``TemplateError`` (``TemplateLimitError`` for a
        limit). The wall-clock backstop covers a child stuck where its CPU timer cannot fire."""
        request = pickle.dumps((dict(fields), dict(attributes or {}), contact_key, to))
        worker = await self._idle.get()
        backstop = self.limits.cpu_seconds * 3 + 5.0
        try:
            kind, value = await worker.call(request, backstop)
        except TimeoutError:
            await self._replace(worker)
            raise TemplateLimitError(f"render time limit exceeded: no answer in {backstop:g} s") from None
        except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError):
            await self._replace(worker)
            raise TemplateLimitError("memory limit exceeded: the render process ended") from None
        except BaseException:  # cancelled mid-call: the child's answer would be read by the next caller
            await self._replace(worker)
            raise
        if kind == "limit":
            await self._replace(worker)
            raise TemplateLimitError(value)
        self._idle.put_nowait(worker)
        if kind == "error":
            raise TemplateError(value)
        result: dict[str, str] = value
        return result

    async def _replace(self, worker: _Worker) -> None:
        self._all.discard(worker)
        await worker.kill()
        self._idle.put_nowait(await self._spawn())


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


def _answer(stream: BinaryIO, answer: tuple[str, Any]) -> None:
    body = pickle.dumps(answer)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _render_one(request: tuple[Fields, dict[str, Any], str | None, str], limits: RenderLimits) -> tuple[str, Any]:
    from dispatcher.sending.templates import render

    fields, attributes, contact_key, to = request
    signal.setitimer(signal.ITIMER_PROF, limits.cpu_seconds)
    try:
        out = {
            name: render(source, attributes, contact_key=contact_key, to=to, html=html, max_value=limits.max_value)
            for name, (source, html) in fields.items()
        }
    except _CpuLimit:
        return "limit", f"CPU time limit exceeded: rendering took more than {limits.cpu_seconds:g} s"
    except MemoryError:
        return "limit", f"memory limit exceeded: rendering needed more than {limits.memory_mb} MB"
    except TemplateLimitError as exc:
        return "limit", exc.message
    except TemplateError as exc:
        return "error", exc.message
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    return "ok", out


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
            request = pickle.loads(_read(stdin, size))
        except EOFError:
            return
        kind, value = _render_one(request, limits)
        _answer(stdout, (kind, value))
        if kind == "limit":  # whatever the template left behind goes with the process
            return


if __name__ == "__main__":
    main()
