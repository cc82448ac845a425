"""The wire under webhook delivery: HTTP/1.1 responses parsed by llhttp (httptools) on an asyncio Protocol, one
request at a time per connection, and keep-alive connections pooled per host under a limit on those in use.

Everything a receiver sends is bounded: the status line and headers (MAX_HEAD), the body (only the first
`excerpt` bytes are kept; a longer body ends the request and the connection), and the time (the caller's
deadline). Who may be connected to is not decided here: outbound.py opens the connections.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Hashable
from dataclasses import dataclass

import httptools

MAX_HEAD = 64 * 1024  # status line and headers together; a receiver streaming headers forever is cut off
KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's default)


class ProtocolError(Exception):
    """The receiver closed the connection before answering in full, or answered with something not HTTP/1.x."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: str | None
    body: bytes  # the first `excerpt` bytes at most
    reusable: bool  # the answer was read to its end and the receiver keeps the connection open


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection. `request` writes a whole request and waits for the answer's head and as much
    of its body as the excerpt keeps."""

    def __init__(self, loop: asyncio.AbstractEventLoop, excerpt: int):
        self.loop = loop
        self.excerpt = excerpt
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._retry_after: str | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._head = 0  # bytes received before the head was complete
        self._head_done = False
        self._framed = False  # Content-Length or Transfer-Encoding given: EOF before the end is a truncation
        self._complete = False
        self._keep_alive = False
        self._extra = False  # bytes after the answer: the connection cannot be reused

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's classes

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._head_done and not self._framed:
            self._complete = True  # a body delimited by the end of the connection (HTTP/1.0 style)
            self._finish()
        else:
            self._fail(ProtocolError("the receiver closed the connection before answering in full"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for, or the rest of a body too long to keep
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._complete:  # an answer, then bytes after it (llhttp refuses them after Connection: close)
                self._extra = True
                self._finish()
            else:
                self._fail(ProtocolError(f"not an HTTP/1.x answer: {exc}"))
            return
        if not self._head_done:
            self._head += len(data)
            if self._head > MAX_HEAD:
                self._fail(ProtocolError(f"status line and headers longer than {MAX_HEAD} bytes"))
                return
        if self._complete or self._size >= self.excerpt:
            self._finish()

    def eof_received(self) -> bool:
        self.closed = True  # never handed out again; connection_lost decides what the end means for an answer
        return False

    # --- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lower in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        if self._size < self.excerpt:
            self._body.append(body)
            self._size += len(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200 and not self._complete:
            # An interim answer (100 Continue, 103 Early Hints); the final one follows.
            self._status, self._retry_after, self._head_done, self._framed = 0, None, False, False
            return
        self._complete = True
        self._keep_alive = self.parser.should_keep_alive()  # llhttp clears its flags after this callback

    # --- requests -------------------------------------------------------------------------------

    async def request(self, data: bytes, deadline: float) -> Answer:
        """Write `data` (a whole request) and wait for the answer until `deadline` (loop time)."""
        assert self.transport is not None
        self._reset()
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_at(deadline, self._time_out)
        try:
            self.transport.write(data)
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _time_out(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(TimeoutError())

    def _finish(self) -> None:
        assert self._waiter is not None
        body = b"".join(self._body)[: self.excerpt]
        reusable = self._complete and self._keep_alive and not self._extra and not self.closed
        self._waiter.set_result(Answer(self._status, self._retry_after, body, reusable))

    def _fail(self, exc: Exception) -> None:
        assert self._waiter is not None
        self._waiter.set_exception(exc)
        self.close()

    @property
    def open(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        """Drop the connection without a goodbye: nothing is owed to a receiver whose answer we stopped reading
        (and a TLS close_notify could wait on a hostile one)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """At most `limit` connections in use at once (a request over the limit waits for one to be released), and
    idle keep-alive connections per key, the most recently used first, closed after KEEPALIVE seconds. As with
    aiohttp's connector, idle connections are not counted against the limit: a host keeps at most as many as it
    had in use at once in the last KEEPALIVE seconds."""

    def __init__(self, limit: int, keepalive: float = KEEPALIVE):
        self.limit = limit
        self.keepalive = keepalive
        self._used = 0
        self._in_use: set[Connection] = set()
        self._idle: dict[Hashable, list[Connection]] = {}
        self._idle_count = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweep: asyncio.TimerHandle | None = None
        self.closed = False

    def try_slot(self) -> bool:
        if self._used < self.limit and not self._waiters:
            self._used += 1
            return True
        return False

    async def wait_slot(self) -> None:
        """Wait for a slot released by another request (it is handed over, not counted again)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.free_slot()  # handed over as this wait was cancelled: pass it on
            elif waiter in self._waiters:  # (free_slot drops waiters cancelled before their turn)
                self._waiters.remove(waiter)
            raise

    def free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._used -= 1

    def idle(self, key: Hashable, now: float) -> Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            self._idle_count -= 1
            if conn.open and now - conn.idle_since < self.keepalive:
                self._in_use.add(conn)
                return conn
            conn.close()
        return None

    def used(self, conn: Connection) -> None:
        self._in_use.add(conn)

    def release(self, key: Hashable, conn: Connection, reusable: bool) -> None:
        """Give back a connection taken with `idle` or registered with `used`, and its slot."""
        self._in_use.discard(conn)
        self.free_slot()
        if not reusable or conn.closed or self.closed:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        self._idle.setdefault(key, []).append(conn)
        self._idle_count += 1
        if self._sweep is None:
            self._sweep = conn.loop.call_later(self.keepalive, self._close_expired, conn.loop)

    def _close_expired(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        now = loop.time()
        for key, conns in list(self._idle.items()):
            keep = [c for c in conns if not c.closed and now - c.idle_since < self.keepalive]
            for c in conns:
                if c not in keep:
                    c.close()
            self._idle_count -= len(conns) - len(keep)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle_count:
            oldest = min(c.idle_since for conns in self._idle.values() for c in conns)
            self._sweep = loop.call_at(oldest + self.keepalive, self._close_expired, loop)

    def close(self) -> None:
        """Close every connection, idle or in use (their requests fail as disconnected)."""
        self.closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        for conn in list(self._in_use):
            conn.close()
