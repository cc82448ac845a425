"""Where the CPU went during a measured phase: seconds used by the service, PostgreSQL, the receiver
and the bench itself, so a ratio can be read against what the machine had to give."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil


def _tree(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _postgres() -> list[psutil.Process]:
    """Every PostgreSQL process on this machine (the embedded server's, or a local one's)."""
    out = []
    for p in psutil.process_iter(["name"]):
        if p.info["name"] and p.info["name"].startswith("postgres"):
            out.append(p)
    return out


def _seconds(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


@dataclass
class Usage:
    used: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def summary(self) -> str:
        parts = ", ".join(f"{name} {s:.2f}s" for name, s in self.used.items())
        total = sum(self.used.values())
        return f"{parts} = {total:.2f} CPU-s in {self.wall:.2f}s wall ({os.cpu_count()} cores)"


@contextlib.contextmanager
def split(service_pid: int | None, receiver_pid: int | None) -> Iterator[Usage]:
    """CPU seconds per group, counting only processes alive at the end (backends that exit midway
    are missed, so PostgreSQL's share is a lower bound with short-lived connections)."""
    finders = {
        "service": lambda: _tree(service_pid),
        "postgres": _postgres,
        "receiver": lambda: _tree(receiver_pid),
        "bench": lambda: [psutil.Process()],
    }
    before = {name: _seconds(find()) for name, find in finders.items()}
    usage = Usage()
    t0 = time.monotonic()
    yield usage
    usage.wall = time.monotonic() - t0
    for name, find in finders.items():
        after = _seconds(find())
        usage.used[name] = sum(s - before[name].get(pid, 0.0) for pid, s in after.items())
