"""The webhook worker: claim due deliveries (lease, commit), POST them, record outcomes in batches.

loop: claim → one job per request (a single event, or a batch for batching callbacks), queued behind
      its callback; callbacks with a free slot take turns at the worker's free request slots
      → wait for a NOTIFY, a freed slot, the poll interval, or stop — whichever comes first.
      A callback's slots are what it has recently been able to take (policy.Window: fewer after
      timeouts, more after successes), and what waits behind them does not count against the
      worker's room for claims, so callbacks whose receivers hang never hold up the others.
task: sign → POST (no transaction open) → hand the outcome to the completion buffer.
flush: one transaction for many outcomes: deliveries, attempt log, callback health.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from dispatcher import ids
from dispatcher.crypto import Keyring
from dispatcher.db import DB_ERRORS, Database
from dispatcher.delivery import formats, outbound, policy, queue
from dispatcher.logs import canonical, get_logger
from dispatcher.loop import BackgroundLoop, wait_event, worker_id
from dispatcher.settings import Settings

log = get_logger("dispatcher.delivery")
CHANNEL = "dispatcher_deliveries"
KEYS_TTL = 30.0  # seconds; rotation bumps a version, this only ages out expired old secrets
HANDBACK_DELAY = 2.0  # seconds before a delivery this worker could not send is due again
# Jobs held per callback: four rounds of its slots. The loop claims more when half are left, so the
# next rounds are already queued locally while a claim is on its way. A slow callback gets one round.
ROUNDS = 4
NEW_WINDOW = policy.Window()  # a callback's before any answer (frozen: built once, not per request)
WINDOW_TTL = 60.0  # seconds; how often windows of callbacks that hold nothing and answered last are forgotten
SLOWED_FOR = 60.0  # seconds a rate-limited callback goes at half pace after a 429 without Retry-After
PACED_TTL = 5.0  # seconds a rate-limited callback keeps the loop claiming often after its last claimed row


# Records an event in the caller's transaction: (conn, account_id, type, messageKey, data). The runtime
# passes events.record_event, so the worker needs nothing from the layer above it.
RecordEvent = Callable[[asyncpg.Connection, int, str, str, dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class Job:
    """One HTTP request: a callback and the claimed rows it carries (one, or a batch)."""

    callback_id: int
    account_id: int
    url: str
    batched: bool
    secrets_version: int
    format: str  # dispatcher/delivery/formats.py
    rows: list[asyncpg.Record]
    claimed_at: float  # monotonic
    recorded: bool = False  # its outcome is buffered for the flusher: never record it twice


@dataclass(slots=True)
class Outcome:
    job: Job
    response: outbound.Response
    webhook_id: str | None  # None when the request could not be built


class DeliveryWorker:
    def __init__(
        self, database: Database, settings: Settings, keyring: Keyring, record: RecordEvent, metrics: Any = None
    ):
        self.db, self.settings, self.keyring, self.metrics = database, settings, keyring, metrics
        self.record = record  # operational events (callback.failing, …) go through the one event path
        self.id = worker_id()
        self.retry = policy.RetryPolicy(tuple(settings.retry_schedule), settings.retry_jitter, settings.retry_after_max)
        self.rules = policy.HealthRules(
            settings.failing_after,
            timedelta(seconds=settings.disable_after),
            timedelta(seconds=settings.failing_probe_interval),
        )
        # Jobs in flight or ready to start: twice the request slots. Claims top up while a quarter of that
        # is free, so requests keep going while a claim is on its way, whatever the number of callbacks.
        # Jobs waiting behind a callback at its own limit are not counted (each callback's share bounds
        # them): a slow callback's backlog must not keep the worker from claiming for the others.
        self._limit = 2 * settings.worker_concurrency
        self._topup = max(1, self._limit // 4)
        self._closed = False
        self._claimed_at = -1e9  # monotonic start of the last claim
        self._tasks: dict[asyncio.Task[None], Job] = {}  # requests in flight
        self._waiting: defaultdict[int, deque[Job]] = defaultdict(deque)  # claimed, not started, per callback
        self._running: defaultdict[int, int] = defaultdict(int)  # requests in flight per callback
        # Callbacks with a job waiting and a free slot of their own, in turn for the next free request
        # slot (an ordered set), so the worker never starts more than it can have in flight.
        self._ready: dict[int, None] = {}
        self._queued = 0  # jobs waiting behind the callbacks in _ready
        self._windows: dict[int, policy.Window] = {}  # callbacks whose slots differ from a new one's
        self._swept = time.monotonic()
        self._keys: dict[int, tuple[int, float, list[str]]] = {}
        # Rate-limited callbacks lately claimed for: callback → (when, seconds its bucket takes to half fill).
        self._paced: dict[int, tuple[float, float]] = {}
        self._turns: dict[int, asyncio.Lock] = {}  # one request per limited callback asks for a token at a time
        self._outcomes: list[Outcome] = []
        self._handback: list[int] = []  # deliveries this worker did not send: due again shortly
        self._flush_now = asyncio.Event()
        self._loop = BackgroundLoop("delivery-loop", database, self._step, channel=CHANNEL)
        self._flush_task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.session = outbound.make_client(
            allowed=s.allowed_networks, limit=s.worker_concurrency, timeout=s.webhook_timeout
        )
        self._loop.start()
        self._flush_task = asyncio.create_task(self._flusher(), name="delivery-flush")

    async def stop(self) -> None:
        """Stop claiming, let in-flight requests finish within the grace period, hand back the rest."""
        await self._loop.stop()
        held = [r["id"] for queue in self._waiting.values() for job in queue for r in job.rows]
        self._waiting.clear()
        self._ready.clear()
        self._queued = 0
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.settings.shutdown_grace)
        unfinished = [t for t in self._tasks if not t.done()]
        held += [r["id"] for t in unfinished for r in self._tasks[t].rows]
        for t in unfinished:
            t.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        self._closed = True
        self._flush_now.set()
        if self._flush_task:
            await self._flush_task
        try:
            await self._flush()
            if held:
                await queue.release(self.db.pool, worker=self.id, delivery_ids=held, due_in=0.0)
        except DB_ERRORS as exc:
            log.warning("could not hand back leases; they expire by themselves", error=str(exc))
        finally:
            await self.session.close()
            await asyncio.sleep(0)  # let the closed connections' transports finish closing on this loop

    # --- the loop ----------------------------------------------------------------------------

    async def _step(self) -> float:
        """One turn of the loop (dispatcher/loop.py); returns how long to wait for a NOTIFY or a freed slot."""
        claimed = await self._paced_claim() if self._budget() >= self._topup else []
        for job in self._group(claimed):
            self._take(job)
        self._dispatch()
        if len(claimed) < self.settings.claim_batch or self._budget() < self._topup:
            wait = self.settings.batch_linger if self._loop.notified else self.settings.poll_interval
            return min(wait, self._pace_wait())
        return 0.0

    def _pace_wait(self) -> float:
        """A rate-limited callback's tokens come back while the worker waits: claim again before its bucket
        is half full, so none go unused while it has deliveries due (callbacks lately claimed for)."""
        now = time.monotonic()
        for cb in [cb for cb, (seen, _) in self._paced.items() if now - seen > PACED_TTL]:
            del self._paced[cb]
        return min((half for _, half in self._paced.values()), default=float("inf"))

    def _budget(self) -> int:
        """Jobs the next claim may bring: what the limit leaves after the jobs in flight or ready to start,
        or at least enough to fill the idle request slots."""
        busy = len(self._tasks)
        return max(self._limit - busy - self._queued, self.settings.worker_concurrency - busy)

    def _held_by(self, callback_id: int) -> int:
        return self._running.get(callback_id, 0) + len(self._waiting.get(callback_id, ()))

    def _window(self, cb: int) -> policy.Window:
        return self._windows.get(cb) or NEW_WINDOW

    def _adapt(self, cb: int, response: outbound.Response) -> None:
        """A new window after each answer (or timeout); callbacks back at a new one's are forgotten. A 429
        without Retry-After (too many requests, no word on when) counts as a timeout: fewer at a time."""
        timed_out = response.error_kind == "timeout" or _slow_down(response)
        current = self._window(cb)
        window = current.after(self.settings.callback_concurrency, ok=response.ok, timed_out=timed_out)
        if window is current:  # the common case under load: a callback at its ceiling stays there
            return
        if window == NEW_WINDOW:
            self._windows.pop(cb, None)
        else:
            self._windows[cb] = window

    async def _paced_claim(self) -> list[asyncpg.Record]:
        """Claim, but not sooner than `claim_interval` after the previous claim began. Under a steady
        trickle every commit's NOTIFY and every finished request wakes the loop: without this, each
        would cost a claim of a row or none (about half a millisecond of PostgreSQL each)."""
        wait = self._claimed_at + self.settings.claim_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._claimed_at = time.monotonic()
        return await self._claim()

    def _forget_idle(self) -> None:
        """What a callback could take a minute ago says little about now, and the claim's arrays stay small:
        windows of callbacks holding nothing whose latest request was answered are forgotten."""
        if time.monotonic() - self._swept < WINDOW_TTL:
            return
        self._swept = time.monotonic()
        held = self._running.keys() | self._waiting.keys()
        for cb in [cb for cb, w in self._windows.items() if not w.slow and cb not in held]:
            del self._windows[cb]
        for cb in [cb for cb in self._turns if cb not in held]:
            del self._turns[cb]

    async def _claim(self) -> list[asyncpg.Record]:
        s = self.settings
        self._forget_idle()
        known = self._running.keys() | self._waiting.keys() | self._windows.keys()
        held = {cb: (self._held_by(cb), self._window(cb).share(ROUNDS)) for cb in known}
        if self.metrics is not None:
            self.metrics.claims.inc()
        return await queue.claim(
            self.db.pool, self.id, held=held, share=NEW_WINDOW.share(ROUNDS), limit=s.claim_batch,
            lease=s.lease_seconds, linger=s.batch_linger, room=self._budget(),
        )  # fmt: skip

    def _group(self, rows: list[asyncpg.Record]) -> list[Job]:
        by_callback: dict[int, list[asyncpg.Record]] = defaultdict(list)
        for r in rows:
            by_callback[r["callback_id"]].append(r)
            if r["rate_per_second"] is not None:
                self._paced[r["callback_id"]] = (time.monotonic(), r["rate_burst"] / r["rate_per_second"] / 2)
        jobs = []
        for cb, items in by_callback.items():
            size = items[0]["max_batch_size"]
            for i in range(0, len(items), size):
                chunk = items[i : i + size]
                first = chunk[0]
                jobs.append(Job(cb, first["account_id"], first["url"], size > 1, first["secrets_version"],
                                first["format"], chunk, time.monotonic()))  # fmt: skip
        return jobs

    def _take(self, job: Job) -> None:
        self._waiting[job.callback_id].append(job)
        if job.callback_id in self._ready:
            self._queued += 1
        else:
            self._mark_ready(job.callback_id)

    def _mark_ready(self, cb: int) -> None:
        """Join the end of the turn when it has a job waiting and a free slot of its own."""
        if cb not in self._ready and self._waiting.get(cb) and self._running.get(cb, 0) < self._window(cb).slots:
            self._ready[cb] = None
            self._queued += len(self._waiting[cb])

    def _unready(self, cb: int) -> None:
        if cb in self._ready:
            del self._ready[cb]
            self._queued -= len(self._waiting.get(cb, ()))

    def _dispatch(self) -> None:
        """Start waiting jobs while request slots are free, one per callback in turn, each only if its
        lease still covers a whole request (or, with a lease shorter than that, half of it is left)."""
        latest = self._latest_start()
        while self._ready and len(self._tasks) < self.settings.worker_concurrency and not self._loop.stopping:
            cb = next(iter(self._ready))
            self._unready(cb)
            if self._running.get(cb, 0) >= self._window(cb).slots:
                continue  # its window shrank after it joined the turn: it waits for a request to finish
            waiting = self._waiting[cb]
            job = waiting.popleft()
            if not waiting:
                del self._waiting[cb]
            if time.monotonic() - job.claimed_at < latest:
                self._start(job)
            else:  # held too long: another worker may get it when the lease ends, so not us
                self._hand_back(job)
            self._mark_ready(cb)

    def _latest_start(self) -> float:
        """Seconds after its claim a job may still start: its lease must cover a whole request (or, with a
        lease shorter than that, half of it must be left)."""
        lease = self.settings.lease_seconds
        return max(lease - self.settings.webhook_timeout - 5, lease / 2)

    def _start(self, job: Job) -> None:
        self._running[job.callback_id] += 1
        task = asyncio.create_task(self._deliver(job))
        self._tasks[task] = job
        task.add_done_callback(lambda t: self._done(t, job))

    def _return_waiting(self, cb: int) -> None:
        """The receiver asked to stop (410) or to wait (Retry-After): what waits behind the request goes
        back to the queue instead of following up, and the flush disables or pauses the callback. An
        ordinary failure does not: each delivery keeps its own retry schedule."""
        self._unready(cb)
        for job in self._waiting.pop(cb, ()):
            self._hand_back(job)

    def _hand_back(self, job: Job) -> None:
        self._handback.extend(r["id"] for r in job.rows)
        self._flush_now.set()
        self._loop.wake()  # it freed room

    def _done(self, task: asyncio.Task[None], job: Job) -> None:
        cb = job.callback_id
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", callback_id=cb, recorded=job.recorded, error=repr(task.exception()))
            if not job.recorded:  # a failed attempt, so the retry schedule (not a tight loop) applies
                self._outcome(job, outbound.Response(time.time(), 0.0, error_kind="internal_error"), None)
        self._tasks.pop(task, None)
        self._running[cb] -= 1
        if not self._running[cb]:
            del self._running[cb]
        self._mark_ready(cb)
        self._dispatch()
        # Refill once half its share or less is left (not "exactly half": a claim may land below that),
        # or when the worker has room again, so requests never wait on a claim.
        if self._held_by(cb) <= self._window(cb).share(ROUNDS) // 2 or self._budget() == self._topup:
            self._loop.wake()

    # --- one request -------------------------------------------------------------------------

    async def _signing_secrets(self, job: Job) -> list[str]:
        cached = self._keys.get(job.callback_id)
        if cached and cached[0] == job.secrets_version and time.monotonic() - cached[1] < KEYS_TTL:
            return cached[2]
        keys = await queue.signing_secrets(self.db.pool, self.keyring, job.callback_id)
        self._keys[job.callback_id] = (job.secrets_version, time.monotonic(), keys)
        return keys

    async def _deliver(self, job: Job) -> None:
        if self._window(job.callback_id).slow:
            # Its last request timed out: it is in no hurry. Spreading the next tries of such callbacks
            # keeps their timeouts from arriving together, a stall for everyone else on this loop.
            await asyncio.sleep(random.uniform(0, self.settings.webhook_timeout / 2))
        try:
            secrets = await self._signing_secrets(job)
        except DB_ERRORS as exc:
            log.warning("could not load signing keys; handing the deliveries back", callback_id=job.callback_id,
                        error=str(exc) or type(exc).__name__)  # fmt: skip
            self._hand_back(job)
            return
        if job.rows[0]["rate_per_second"] is not None and not await self._turn(job):
            return
        msg_id, body, headers = formats.request(
            job.format, job.rows, job.batched, secrets, int(time.time()), outbound.USER_AGENT
        )
        response = await outbound.post(self.session, job.url, body, headers, self.settings.allowed_networks)
        self._outcome(job, response, msg_id)  # first: whatever happens next, the attempt is on record
        self._adapt(job.callback_id, response)
        if response.status == 410 or response.retry_after is not None:
            self._return_waiting(job.callback_id)  # the receiver said stop, or not now
        canonical(
            log,
            "webhook",
            callback_id=ids.encode("cb", job.callback_id),
            webhook_id=msg_id,
            events=len(job.rows),
            attempt=job.rows[0]["attempts"] + 1,
            status=response.status,
            error=response.error_kind,
            duration_ms=round(response.duration_ms, 1),
        )
        if self.metrics is not None:
            self.metrics.observe_attempt(response, len(job.rows))

    async def _turn(self, job: Job) -> bool:
        """Wait for a token of the callback's rate limit, taken as the request goes (so a request that starts
        late counts then, not at its claim). One that cannot go while its lease lasts is handed back. The
        callback's other requests in this process wait their turn here, so they do not all ask at once."""
        async with self._turns.setdefault(job.callback_id, asyncio.Lock()):
            return await self._take_token(job)

    async def _take_token(self, job: Job) -> bool:
        while True:
            if time.monotonic() - job.claimed_at > self._latest_start() or self._loop.stopping:
                self._hand_back(job)  # it waited too long for its turn (or the worker stops): not us
                return False
            try:
                wait = await queue.take_token(self.db.pool, job.callback_id)
            except DB_ERRORS as exc:
                log.warning("could not take a rate limit token; handing the deliveries back",
                            callback_id=job.callback_id, error=str(exc) or type(exc).__name__)  # fmt: skip
                self._hand_back(job)
                return False
            if not wait:  # taken (0), or the limit is gone (None)
                return True
            await asyncio.sleep(wait)

    def _outcome(self, job: Job, response: outbound.Response, webhook_id: str | None) -> None:
        job.recorded = True
        self._outcomes.append(Outcome(job, response, webhook_id))
        if len(self._outcomes) >= 500:
            self._flush_now.set()

    # --- recording outcomes ------------------------------------------------------------------

    async def _flusher(self) -> None:
        while not self._closed:
            await wait_event(self._flush_now, 0.02)
            self._flush_now.clear()
            if not self._outcomes and not self._handback:
                continue
            try:
                await self._flush()
            except Exception as exc:  # outcomes stay buffered until they are written
                log.warning("recording outcomes failed; retrying", error=str(exc) or type(exc).__name__)
                await self.db.discard_connections()
                await asyncio.sleep(0.5)

    async def _flush(self) -> None:
        batch, self._outcomes = self._outcomes, []
        handback, self._handback = self._handback, []
        if not batch and not handback:
            return
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                if batch:
                    await self._record(conn, batch)
                if handback:
                    await queue.release(conn, worker=self.id, delivery_ids=handback, due_in=HANDBACK_DELAY)
        except BaseException:
            self._outcomes[:0] = batch  # keep them for the next try; leases cover the wait
            self._handback[:0] = handback
            raise

    async def _record(self, conn: asyncpg.Connection, batch: list[Outcome]) -> None:
        """One attempt row per request, and each delivery's outcome: done, due again later, or failed."""
        rng = random.Random()
        requests: list[queue.Request] = []
        results: list[queue.Result] = []
        for n, o in enumerate(batch, 1):
            job, resp = o.job, o.response
            started = datetime.fromtimestamp(resp.started_at, UTC)
            requests.append(queue.Request(job.account_id, job.callback_id, o.webhook_id, len(job.rows), started,
                                          resp.duration_ms, resp.status, resp.error_kind, resp.excerpt))  # fmt: skip
            for r in job.rows:
                number = r["attempts"] + 1
                if resp.ok:
                    status, delay = "succeeded", 0.0
                else:
                    wait = self.retry.next_delay(number - r["retry_base"], resp.retry_after, rng)
                    status, delay = ("failed", 0.0) if wait is None else ("pending", wait)
                ordered = r["ordered_key"] is not None
                results.append(queue.Result(r["id"], n, status, number, delay, r["ordered_key"],
                                            r["event_id"] if ordered else None))  # fmt: skip
        await queue.complete(conn, worker=self.id, requests=requests, results=results)
        slowed = {o.job.callback_id for o in batch if _slow_down(o.response) and o.job.rows[0]["rate_per_second"]}
        if slowed:
            await queue.slow_down(conn, sorted(slowed), seconds=SLOWED_FOR)
        await self._update_health(conn, batch)

    async def _update_health(self, conn: asyncpg.Connection, batch: list[Outcome]) -> None:
        per_callback: dict[int, list[outbound.Response]] = defaultdict(list)
        for o in batch:
            per_callback[o.job.callback_id].append(o.response)
        rows = await queue.lock_callbacks(conn, list(per_callback))
        now = datetime.now(UTC)
        changed: list[tuple[asyncpg.Record, policy.Health]] = []
        for row in rows:
            responses = sorted(per_callback[row["id"]], key=lambda r: r.started_at)
            last_success = max((i for i, r in enumerate(responses) if r.ok), default=-1)
            streak = responses[last_success + 1 :]
            retry_after = max((r.retry_after for r in responses if r.retry_after is not None), default=None)
            before = policy.Health(
                row["status"],
                row["consecutive_failures"],
                row["failing_since"],
                row["paused_until"],
                row["disabled_reason"],
            )
            after = policy.after_attempts(
                before, self.rules, now,
                successes=sum(r.ok for r in responses),
                failures=len(streak),
                last_ok=responses[-1].ok,
                gone=any(r.status == 410 for r in responses),
                first_failure_at=datetime.fromtimestamp(streak[0].started_at, UTC) if streak else None,
                pause_until=now + timedelta(seconds=min(retry_after, self.settings.retry_after_max)) if retry_after else None,
            )  # fmt: skip
            if after != before:
                changed.append((row, after))
        if not changed:
            return
        await queue.set_health(conn, [(r["id"], h) for r, h in changed])
        await self._announce(conn, [(r, h) for r, h in changed if h.status != r["status"]])

    async def _announce(
        self, conn: asyncpg.Connection, transitions: list[tuple[asyncpg.Record, policy.Health]]
    ) -> None:
        """A callback turning failing or disabled is logged and becomes an operational event."""
        for row, health in transitions:
            callback_id = ids.encode("cb", row["id"])
            log.warning("callback " + health.status, callback_id=callback_id, previous=row["status"],
                        consecutive_failures=health.consecutive_failures, reason=health.disabled_reason)  # fmt: skip
            if health.status not in ("failing", "disabled"):
                continue
            data = {"callbackId": callback_id, "name": row["name"], "url": row["url"],
                    "consecutiveFailures": health.consecutive_failures, "reason": health.disabled_reason}  # fmt: skip
            await self.record(conn, row["account_id"], f"callback.{health.status}", callback_id, data)


def _slow_down(response: outbound.Response) -> bool:
    """Too many requests, and no word on when to come back: the receiver wants a slower pace."""
    return response.status == 429 and response.retry_after is None
