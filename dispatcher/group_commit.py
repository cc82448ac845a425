"""Group commit: requests that arrive while the database is busy with earlier ones are written together.

One transaction serves the whole group, so a steady stream of one-event (or one-message) requests
costs the database little more than the same work sent in batches. An idle service writes a request
at once; groups form only when writes queue up. Every caller gets its own result once it is
committed. A group the database refuses (bad data, a constraint, a deadlock) is written again
request by request, so one request's failure is never another's; a group that fails for want of the
database (connection lost, timeout) fails every request in it with that error, at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncpg

Item = TypeVar("Item")
Result = TypeVar("Result")

WRITERS = 2  # groups in flight: one is written while the next gathers (and the API parses requests)
# SQLSTATE classes worth retrying request by request: data exceptions, integrity constraint violations,
# program limits; and deadlocks (two groups taking the same keys in opposite orders).
_PER_REQUEST = ("22", "23", "54", "40P01")


@dataclass(slots=True)
class _Pending(Generic[Item, Result]):
    item: Item
    items: int
    nbytes: int
    future: asyncio.Future[Result]


class GroupWriter(Generic[Item, Result]):
    """`await writer.write(item)` is `(await write_group(conn, [item]))[0]` in a transaction, shared
    with whatever else is queued. A group stops growing at `max_items` or `max_bytes` (a single item
    may exceed them on its own)."""

    def __init__(
        self, pool: asyncpg.Pool, write_group: Callable[[asyncpg.Connection, list[Item]], Awaitable[Sequence[Result]]],
        *, max_items: int, max_bytes: int = 16 * 2**20,
    ):  # fmt: skip
        self._pool, self._write_group, self._max_items, self._max_bytes = pool, write_group, max_items, max_bytes
        self._queue: deque[_Pending[Item, Result]] = deque()
        self._writers: set[asyncio.Task[None]] = set()

    async def write(self, item: Item, *, items: int = 1, nbytes: int = 0) -> Result:
        """The item's result, once it is committed; `items`/`nbytes`: its weight in a group."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, items, nbytes, future))
        if len(self._writers) < WRITERS:
            self._writers.add(asyncio.create_task(self._write_queued()))
        return await future

    async def aclose(self) -> None:
        """Let the writes under way finish (their callers are waiting for them)."""
        while self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)

    async def _write_queued(self) -> None:
        group: list[_Pending[Item, Result]] = []
        try:
            while self._queue:
                group = [self._queue.popleft()]
                items, nbytes = group[0].items, group[0].nbytes
                while self._queue and (
                    items + self._queue[0].items <= self._max_items
                    and nbytes + self._queue[0].nbytes <= self._max_bytes
                ):
                    items, nbytes = items + self._queue[0].items, nbytes + self._queue[0].nbytes
                    group.append(self._queue.popleft())
                await self._write(group)
        except BaseException:  # cancelled (the loop is going away), or a bug: nobody may wait forever
            for p in [*group, *self._queue]:
                p.future.cancel()
            self._queue.clear()
            raise
        finally:  # in the same step as the last look at the queue: a request queued later starts a writer
            self._writers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _write(self, group: list[_Pending[Item, Result]]) -> None:
        committed: Sequence[Result] | None = None
        try:
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    results = await self._write_group(conn, [p.item for p in group])
                committed = results
        except Exception as exc:
            if committed is not None:
                return  # it failed after the commit (releasing the connection): the results stand
            if len(group) > 1 and _per_request(exc):
                for p in group:
                    await self._write([p])
                return
            for p in group:
                _settle(p.future, exc=exc)
        finally:
            if committed is not None:
                for p, result in zip(group, committed, strict=True):
                    _settle(p.future, result=result)


def _per_request(exc: Exception) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and (state[:2] in _PER_REQUEST or state in _PER_REQUEST)


def _settle(future: asyncio.Future[Result], *, result: Result | None = None, exc: BaseException | None = None) -> None:
    if future.done():  # its caller has gone (cancelled); a committed write stands all the same
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]
