"""The scenarios. Each gets a running Env (database, service, receiver, API client) and returns a Result."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import baselines, cpu, purge, workload
from bench.filtered import ingest_filtered
from bench.history import history
from bench.ordered import deliver_ordered
from bench.overview import overview
from bench.receiver import Receiver
from bench.report import Result, percentile
from bench.service import Api, Postgres, Service
from bench.upgrade import upgrade
from bench.workload import deliver_round, event, post_events, register_callback


class NotAvailable(Exception):
    """The service does not offer what the scenario measures."""


@dataclass
class Env:
    args: argparse.Namespace
    pg: Postgres
    service: Service
    receiver: Receiver
    api: Api
    cpu: str = ""  # CPU seconds per process group in the last measured phase

    def measured(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.profile("service")

    @contextlib.asynccontextmanager
    async def profile(self, label: str) -> AsyncIterator[None]:
        """The measured phase: prints where the CPU went; with --profile DIR, py-spy records the service."""
        with cpu.split(self.service.pid, self.receiver.pid) as used:
            async with self._py_spy(label):
                yield
        self.cpu = used.summary()
        print(f"bench: cpu during {label}: {self.cpu}", file=sys.stderr)

    @contextlib.asynccontextmanager
    async def _py_spy(self, label: str) -> AsyncIterator[None]:
        if not self.args.profile:
            yield
            return
        started = _start_py_spy(Path(self.args.profile), f"{self.args.scenario}-{label}", self.service.pid)
        if started is None:
            yield
            return
        proc, target = started
        await asyncio.sleep(0.5)  # let py-spy attach
        try:
            yield
        finally:
            proc.send_signal(2)  # SIGINT: py-spy writes the profile and exits
            await asyncio.to_thread(proc.wait, 30)
            print(f"bench: profile written to {target}", file=sys.stderr)


def _start_py_spy(out_dir: Path, name: str, pid: int | None) -> tuple[subprocess.Popen[bytes], Path] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if pid is None or not Path(spy).exists():
        print("bench: --profile needs py-spy (pip install py-spy); not profiling", file=sys.stderr)
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.txt"  # collapsed stacks: one "frame;frame;... count" line per stack
    cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--subprocesses", "-o", str(target)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), target


def _make_tmp() -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="dispatcher-bench-"))
    tmp.chmod(0o755)  # the embedded server may run as another user
    return tmp


@contextlib.asynccontextmanager
async def environment(args: argparse.Namespace, *, ports: int = 1) -> AsyncIterator[Env]:
    tmp = _make_tmp()
    pg = Postgres(tmp)
    service: Service | None = None
    receiver: Receiver | None = None
    api: Api | None = None
    try:
        await pg.start()
        receiver = await Receiver(ports=ports).start()
        extra = {"DISPATCHER_PROCESSES": str(args.processes)} | SERVICE_ENV.get(args.scenario, {})
        if args.scenario == "bounces":
            extra |= _bounce_env(args)
        extra |= dict(item.split("=", 1) for item in args.service_env)
        service = await Service(tmp, pg.url, extra, split=args.split).start()
        api = Api(service.url, service.key)
        yield Env(args, pg, service, receiver, api)
    except NotAvailable:
        raise
    except BaseException:
        if service is not None:
            print(f"bench: service log tail:\n{service.log_tail()}", file=sys.stderr)
        raise
    finally:
        if api is not None:
            await api.close()
        if service is not None:
            await service.stop()
        if receiver is not None:
            await receiver.stop()
        await pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _raw_jobs(n: int, names: list[str], *, batch: int = 1, prefix: str = "raw") -> list[baselines.Job]:
    """The baseline's requests: for each hook, n events, `batch` per request."""
    jobs = []
    for port, name in enumerate(names):
        for i in range(0, n, batch):
            payloads = [workload.webhook_payload(j, prefix) for j in range(i, min(n, i + batch))]
            body: Any = payloads if batch > 1 else payloads[0]
            jobs.append(baselines.Job(name, port, f"msg_{name}_{i}", body))
    return jobs


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --- deliver / deliver-batched ----------------------------------------------------------------


async def deliver(env: Env) -> Result:
    n = env.args.events or 5000
    cb = await register_callback(env.api, env.receiver, "hook", batch=1)
    _log(f"recording {n} events for a disabled callback, then re-enabling it")
    rnd = await deliver_round(env.api, env.receiver, [cb], [event(i) for i in range(n)], measured=env.measured)
    _log(f"service: {rnd.rate:,.0f} webhooks/s (first after {rnd.first_arrival * 1000:.0f} ms); baseline next")
    seconds = await baselines.raw_deliver(env.receiver, _raw_jobs(n, ["raw"]))
    result = Result("deliver", n, rnd.rate, "webhooks/s", n / seconds, target="ratio >= 0.5")
    result.met = (result.ratio or 0) >= 0.5
    result.details = {"first_ms": rnd.first_arrival * 1000, "connections": rnd.connections, "signatures": _checked(rnd)}
    return result


async def deliver_batched(env: Env) -> Result:
    n = env.args.events or 20000
    m = min(n, 5000)
    batched = await register_callback(env.api, env.receiver, "batched", batch=100)
    single = await register_callback(env.api, env.receiver, "single", batch=1, subscribe=False)
    # `single` has no subscription yet: subscribe it only for its own round below.
    _log(f"recording {n} events for a disabled batching callback (maxBatchSize 100), then re-enabling it")
    rnd = await deliver_round(env.api, env.receiver, [batched], [event(i) for i in range(n)], measured=env.measured)
    _log(
        f"service: {rnd.rate:,.0f} events/s in {rnd.requests} requests (first after {rnd.first_arrival * 1000:.0f} ms);"
        f" unbatched reference round of {m} next"
    )
    await workload.set_status(env.api, [batched], "disabled")
    await env.api.call(
        "POST", "/v1/subscriptions", {"name": "single-sub", "callbackId": single.id, "eventTypes": ["*"]}
    )
    ref = await deliver_round(env.api, env.receiver, [single], [event(i, "r") for i in range(m)])
    seconds = await baselines.raw_deliver(env.receiver, _raw_jobs(n, ["raw"], batch=100))
    result = Result("deliver-batched", n, rnd.rate, "events/s", n / seconds)
    result.target = f">= 10x the deliver rate ({ref.rate:,.0f} webhooks/s -> {10 * ref.rate:,.0f} events/s)"
    result.met = rnd.rate >= 10 * ref.rate
    result.details = {"requests": rnd.requests, "deliver_rate": ref.rate, "signatures": _checked(rnd)}
    return result


def _checked(rnd: workload.Round) -> str:
    return f"{rnd.verified} sampled webhooks verified with standardwebhooks"


# --- ingest -----------------------------------------------------------------------------------


async def ingest(env: Env) -> Result:
    n = env.args.events or 50000
    cb = await register_callback(env.api, env.receiver, "hook", batch=1)
    # Fan-out rows are written for a disabled callback too; keeping it disabled keeps the delivery
    # worker (measured by `deliver`) from competing for the two cores while ingest is measured.
    await workload.set_status(env.api, [cb], "disabled")
    items = [event(i) for i in range(n)]
    _log(f"posting {n} events, batches of 100, 8 concurrent clients")
    async with env.profile("service"):
        t0 = time.monotonic()
        timings = await post_events(env.api, items, batch=100, clients=8)
        seconds = time.monotonic() - t0
    conn = await env.pg.connect()
    try:
        stored = await conn.fetchval("SELECT count(*) FROM queue")
    finally:
        await conn.close()
    assert stored == n, f"expected {n} fan-out rows, found {stored}"
    _log(f"service: {n / seconds:,.0f} events/s; baseline next")
    base = await baselines.raw_ingest(env.pg.url, items)
    lat = [(b - a) * 1000 for a, b in timings]
    result = Result("ingest", n, n / seconds, "events/s", n / base, target="ratio >= 0.5")
    result.p50_ms, result.p99_ms = percentile(lat, 50), percentile(lat, 99)  # per 100-event request
    result.met = (result.ratio or 0) >= 0.5
    return result


# --- latency ----------------------------------------------------------------------------------


@dataclass
class Offered:
    responded: dict[str, float]  # messageKey -> monotonic time its POST was answered
    errors: int
    started: float
    posting: float  # seconds spent posting

    def latencies_ms(self, arrivals: dict[str, float]) -> list[float]:
        return [(arrivals[k] - t) * 1000 for k, t in self.responded.items() if k in arrivals]


async def offer(env: Env, name: str, rate: float, total: int, prefix: str) -> Offered:
    """POST `total` events one per request at `rate`/s, then wait until hook `name` has them all."""
    responded: dict[str, float] = {}
    errors = 0
    sem = asyncio.Semaphore(500)

    async def one(i: int) -> None:
        nonlocal errors
        body = event(i, prefix)
        try:
            await env.api.call("POST", "/v1/events", body)
            responded[body["messageKey"]] = time.monotonic()
        except Exception:
            errors += 1
        finally:
            sem.release()

    tasks = []
    t0 = time.monotonic()
    for i in range(total):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await sem.acquire()
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    posting = time.monotonic() - t0
    await env.receiver.wait_events([name], total - errors, timeout=300)
    return Offered(responded, errors, t0, posting)


async def latency(env: Env) -> Result:
    rate = env.args.rate or 1000.0
    total = env.args.events or int(rate * env.args.duration)
    await register_callback(env.api, env.receiver, "hook", batch=1)
    # warm up: connections, prepared statements, the worker's key cache
    await post_events(env.api, [event(i, "warm") for i in range(50)], batch=1, clients=4)
    await env.receiver.wait_events(["hook"], 50, timeout=30)
    await env.receiver.reset(track=True)
    _log(f"posting {total} events one per request at {rate:g}/s")
    async with env.profile("service"):
        run = await offer(env, "hook", rate, total, "lat")
    lat = run.latencies_ms(await env.receiver.arrivals())
    achieved = len(run.responded) / run.posting
    result = Result("latency", total, achieved, "events/s", p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99))
    result.target = "p50 < 20 ms, p99 < 100 ms (at the offered rate)"
    result.met = result.p50_ms < 20 and result.p99_ms < 100 and achieved >= 0.95 * rate and not run.errors
    result.details = {"offered_rate": float(rate), "errors": run.errors, "max_ms": max(lat) if lat else float("nan")}
    return result


# --- isolation --------------------------------------------------------------------------------

ISOLATION_TIMEOUT = "2"  # DISPATCHER_WEBHOOK_TIMEOUT: each hanging request is cut off after 2 s
HANG_BACKLOG = 100  # events queued for every hanging callback before the second phase


async def _healthy_phase(env: Env, rate: float, total: int, prefix: str) -> tuple[float, list[float]]:
    """The healthy callback offered `rate`/s: (events/s delivered while they were offered, latencies in ms).
    Counting only arrivals within the offering window shows a stall even when a backlog drains later."""
    await env.receiver.reset(track=True)
    run = await offer(env, "healthy", rate, total, prefix)
    arrivals = {k: t for k, t in (await env.receiver.arrivals()).items() if k.startswith(prefix + "-")}
    in_time = sum(t <= run.started + run.posting for t in arrivals.values())
    return in_time / run.posting, run.latencies_ms(arrivals)


async def _hanging_callbacks(env: Env, n: int) -> list[workload.Callback]:
    """n callbacks on receivers that never answer, each with HANG_BACKLOG deliveries queued, disabled."""
    hanging = []
    for i in range(n):
        hanging.append(await register_callback(env.api, env.receiver, f"hang{i}", path="hang", event_types=["opened"]))
    await workload.set_status(env.api, hanging, "disabled")
    await post_events(env.api, [event(i, "backlog", "opened") for i in range(HANG_BACKLOG)], batch=100, clients=1)
    return hanging


async def isolation(env: Env) -> Result:
    rate = env.args.rate or 200.0
    total = env.args.events or int(rate * env.args.duration)
    n = env.args.hanging
    await register_callback(env.api, env.receiver, "healthy", batch=1, event_types=["sent"])
    _log(f"registering {n} callbacks whose receivers never answer, {HANG_BACKLOG} deliveries queued for each")
    hanging = await _hanging_callbacks(env, n)
    await post_events(env.api, [event(i, "warm") for i in range(50)], batch=1, clients=4)
    await env.receiver.wait_events(["healthy"], 50, timeout=30)
    _log(f"alone: {total} events one per request at {rate:g}/s")
    alone, alone_lat = await _healthy_phase(env, rate, total, "alone")
    _log(f"alone: {alone:,.0f} events/s, p99 {percentile(alone_lat, 99):.1f} ms; now with {n} hanging callbacks")
    await workload.set_status(env.api, hanging, "active")
    async with env.measured():
        shared, shared_lat = await _healthy_phase(env, rate, total, "shared")
    hung = (await env.receiver.stats())["hung"]
    result = Result("isolation", total, shared, "events/s", alone, p50_ms=percentile(shared_lat, 50))
    result.p99_ms = percentile(shared_lat, 99)
    p99_ratio = result.p99_ms / percentile(alone_lat, 99)
    result.target = "throughput ratio >= 0.9, p99 <= 2x alone"
    result.met = (result.ratio or 0) >= 0.9 and p99_ratio <= 2
    result.details = {
        "alone_p99_ms": percentile(alone_lat, 99),
        "p99_ratio": p99_ratio,
        "hanging_callbacks": len(hung),  # that got at least one request while measured
        "hanging_requests": sum(hung.values()),
        "webhook_timeout": f"{ISOLATION_TIMEOUT} s",
    }
    return result


# --- fanout -----------------------------------------------------------------------------------


async def fanout(env: Env) -> Result:
    n = env.args.events or 2000
    k = 20
    cbs = [
        await register_callback(env.api, env.receiver, f"fan{i}", port=i, batch=1, event_types=["sent"])
        for i in range(k)
    ]
    _log(f"recording {n} events for {k} disabled callbacks, then re-enabling them")
    rnd = await deliver_round(env.api, env.receiver, cbs, [event(i) for i in range(n)], measured=env.measured)
    _log(f"service: {rnd.rate:,.0f} deliveries/s; baseline next")
    seconds = await baselines.raw_deliver(env.receiver, _raw_jobs(n, [f"raw{i}" for i in range(k)]))
    result = Result("fanout", n, rnd.rate, "deliveries/s", n * k / seconds, target="ratio >= 0.5")
    result.met = (result.ratio or 0) >= 0.5
    result.details = {"deliveries": n * k, "connections": rnd.connections, "signatures": _checked(rnd)}
    return result


# --- backlog ----------------------------------------------------------------------------------

BACKLOG_SQL = """
WITH ev AS (
    INSERT INTO events (account_id, type, message_key, recipient, occurred_at, data)
    SELECT $1, 'sent', 'backlog-' || g, 'user' || g || '@example.com', now(), jsonb_build_object('orderId', g)
    FROM generate_series(1, $2::int) g
    RETURNING id, recorded_at
)
INSERT INTO queue (account_id, event_id, callback_id, created_at) SELECT $1, id, $3, recorded_at FROM ev
"""


async def backlog(env: Env) -> Result:
    n = env.args.events or 5000
    size = env.args.backlog
    healthy = await register_callback(env.api, env.receiver, "healthy", batch=1)
    stuck = await register_callback(env.api, env.receiver, "stuck", batch=1, subscribe=False)
    await workload.set_status(env.api, [stuck], "disabled")
    _log(f"reference round: {n} events, empty queue")
    empty = await deliver_round(env.api, env.receiver, [healthy], [event(i, "a") for i in range(n)])
    _log(f"empty table: {empty.rate:,.0f} webhooks/s; inserting {size:,} pending deliveries for the disabled one")
    t0 = time.monotonic()
    conn = await env.pg.connect()
    try:
        account_id = await conn.fetchval("SELECT id FROM accounts WHERE name = 'default'")
        stuck_id = int(stuck.id.removeprefix("cb_"))
        await conn.execute(BACKLOG_SQL, account_id, size, stuck_id, timeout=600)
        await conn.execute("VACUUM ANALYZE queue", timeout=600)
        await conn.execute("VACUUM ANALYZE events", timeout=600)
        pending = await conn.fetchval("SELECT count(*) FROM queue WHERE callback_id = $1", stuck_id)
    finally:
        await conn.close()
    _log(f"{pending:,} pending for the disabled callback (setup {time.monotonic() - t0:.0f}s); measuring again")
    full = await deliver_round(
        env.api, env.receiver, [healthy], [event(i, "b") for i in range(n)], measured=env.measured
    )
    result = Result("backlog", n, full.rate, "webhooks/s", empty.rate, target="ratio >= 0.9")
    result.met = (result.ratio or 0) >= 0.9
    result.details = {
        "backlog": pending,
        "empty_table": empty.rate,
        "first_ms": f"{empty.first_arrival * 1000:.0f} (empty), {full.first_arrival * 1000:.0f} (backlog)",
        "signatures": _checked(full),
    }
    return result


# --- send -------------------------------------------------------------------------------------

MESSAGE = {"recipient": {"to": "a@example.com"}, "from": "shop@example.com", "subject": "hi", "text": "hello"}


async def send(env: Env) -> Result:
    from dispatcher.events import encode_cursor

    n = env.args.events or 2000
    status, body = await env.api.status("POST", "/v1/messages/bench-probe", MESSAGE)
    if status in (404, 405):
        raise NotAvailable(f"POST /v1/messages/{{messageKey}} answered {status}: the send API is not available")
    if status not in (200, 201, 202):
        raise RuntimeError(f"POST /v1/messages/bench-probe -> {status}: {body}")
    keys = [f"send-{i}" for i in range(n)]
    it = iter(keys)

    async def client() -> None:
        for key in it:
            s, b = await env.api.status("POST", f"/v1/messages/{key}", MESSAGE)
            if s not in (200, 201, 202):
                raise RuntimeError(f"POST /v1/messages/{key} -> {s}: {b}")

    seen: set[str] = set()
    cursor: str | None = None

    async def poll_sent() -> None:
        nonlocal cursor
        while True:
            q = "/v1/events?type=sent&limit=1000" + (f"&cursor={cursor}" if cursor else "")
            page = (await env.api.call("GET", q))["events"]
            if not page:
                return
            seen.update(e["messageKey"] for e in page if e["messageKey"].startswith("send-"))
            cursor = encode_cursor(int(page[-1]["eventId"].removeprefix("evt_")))
            if len(page) < 1000:
                return

    _log(f"sending {n} messages to the maildir transport, 8 concurrent clients")
    async with env.profile("service"):
        t0 = time.monotonic()
        await asyncio.gather(*(client() for _ in range(8)))
        accepted = time.monotonic() - t0
        deadline = time.monotonic() + 300
        while len(seen) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(seen)} of {n} messages reached 'sent'")
            await poll_sent()
            if len(seen) < n:
                await asyncio.sleep(0.05)
        seconds = time.monotonic() - t0
    result = Result("send", n, n / seconds, "messages/s", target=">= 1,000 messages/s end to end")
    result.met = result.rate >= 1000
    result.details = {"accept_rate": n / accepted}
    return result


# --- inbound ----------------------------------------------------------------------------------


def _sendgrid_batch(i: int, size: int) -> list[dict[str, Any]]:
    now = int(time.time())
    return [
        {"event": "delivered", "email": f"user{n}@example.com", "timestamp": now, "sg_event_id": f"sg-{n}",
         "sg_message_id": f"sgm{n}.filter0001", "smtp-id": f"<m{n}@example.com>", "messageKey": f"in-{n}",
         "response": "250 OK"}
        for n in range(i * size, (i + 1) * size)
    ]  # fmt: skip


async def _post_prepared(env: Env, requests: list[tuple[str, bytes, dict[str, str]]], clients: int = 8) -> float:
    """POST prepared (path, body, headers) requests from `clients` loops; returns the seconds taken."""
    it = iter(requests)

    async def client() -> None:
        for path, body, headers in it:
            async with env.api.session.post(env.api.base + path, data=body, headers=headers) as r:
                raw = await r.read()
                if r.status not in (200, 201):
                    raise RuntimeError(f"POST {path} -> {r.status}: {raw[:300]!r}")

    t0 = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.monotonic() - t0


async def inbound(env: Env) -> Result:
    """SendGrid-shaped batches of 100 through a source (signature check, translation, correlation,
    exactly-once recording with the raw event) against the same events through POST /v1/events."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    n = env.args.events or 50000
    size = 100
    cb = await register_callback(env.api, env.receiver, "hook", batch=1)
    await workload.set_status(env.api, [cb], "disabled")  # fan-out rows are written, nothing is sent
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    src = await env.api.call("POST", "/v1/sources", {"name": "sg", "provider": "sendgrid",
                                                     "config": {"publicKey": base64.b64encode(der).decode()}})  # fmt: skip
    path = "/in/" + src["sourceId"]
    batches = [_sendgrid_batch(i, size) for i in range(n // size)]
    native = [("/v1/events", orjson.dumps({"events": [
        {"type": "delivered", "messageKey": e["messageKey"], "id": "ref:" + e["sg_event_id"],
         "recipient": e["email"], "data": {"response": e["response"]}} for e in b]}), env.api.headers)
        for b in batches]  # fmt: skip
    _log(f"posting {n} events to POST /v1/events, batches of {size}, 8 concurrent clients")
    async with env.profile("reference"):
        reference = len(batches) * size / await _post_prepared(env, native)
    prepared = []
    for b in batches:
        body = orjson.dumps(b)
        ts = str(int(time.time()))
        signature = base64.b64encode(private.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
        prepared.append((path, body, {"Content-Type": "application/json",
                                      "X-Twilio-Email-Event-Webhook-Signature": signature,
                                      "X-Twilio-Email-Event-Webhook-Timestamp": ts}))  # fmt: skip
    _log(f"reference: {reference:,.0f} events/s; posting the same events as SendGrid batches to {path}")
    async with env.profile("service"):
        seconds = await _post_prepared(env, prepared)
    conn = await env.pg.connect()
    try:
        stored = await conn.fetchval("SELECT count(*) FROM source_receipts")
    finally:
        await conn.close()
    assert stored == len(batches) * size, f"expected {len(batches) * size} provider events, found {stored}"
    result = Result("inbound", n, n / seconds, "events/s", reference, target="ratio >= 0.5 of POST /v1/events")
    result.met = (result.ratio or 0) >= 0.5
    return result


# --- bounces ----------------------------------------------------------------------------------

BOUNCE_DOMAIN = "mail.example.com"
DSN = """From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: {verp}
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-{n}@mx.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b{n}"

--b{n}
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--b{n}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; {to}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{to}>: Recipient address rejected: User unknown

--b{n}
Content-Type: text/rfc822-headers

Return-Path: <{verp}>
From: shop@example.com
To: {to}
Subject: hi

--b{n}--
""".replace("\n", "\r\n")


async def bounces(env: Env) -> Result:
    """DSNs delivered over SMTP by 8 concurrent clients (one connection each, as a mail server
    keeps one) to the inbound listener, until every one is a `bounced` event."""
    import aiosmtplib

    from dispatcher import crypto
    from dispatcher.sending import verp
    from dispatcher.settings import Settings

    n = env.args.events or 5000
    keys = [f"bounce-{i}" for i in range(n)]
    it = iter(keys)

    async def sender() -> None:
        for key in it:
            body = {**MESSAGE, "recipient": {"to": f"{key}@example.org"}}
            s, b = await env.api.status("POST", f"/v1/messages/{key}", body)
            if s != 202:
                raise RuntimeError(f"POST /v1/messages/{key} -> {s}: {b}")

    _log(f"sending {n} messages (maildir) to get their VERP addresses")
    await asyncio.gather(*(sender() for _ in range(8)))
    conn = await env.pg.connect()
    try:
        while await conn.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'") < n:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        rows = await conn.fetch("SELECT id, account_id, recipient FROM messages ORDER BY id")
    finally:
        await conn.close()
    key = crypto.load_keyring(Settings(data_dir=env.service.tmp / "data")).bounce_key
    mails = [
        (address, DSN.format(n=i, verp=address, to=r["recipient"]).encode())
        for i, r in enumerate(rows)
        for address in [verp.envelope_sender(f"bounces@{BOUNCE_DOMAIN}", key, r["account_id"], r["id"])]
    ]
    queue = iter(mails)

    async def mta() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=env.args.inbound_port, timeout=30) as client:
            for rcpt, raw in queue:
                await client.sendmail("", [rcpt], raw)

    _log(f"delivering {n} DSNs to the listener from 8 concurrent SMTP clients")
    async with env.profile("service"):
        t0 = time.monotonic()
        await asyncio.gather(*(mta() for _ in range(8)))
        conn = await env.pg.connect()
        try:
            recorded = await conn.fetchval("SELECT count(*) FROM events WHERE type = 'bounced'")
        finally:
            await conn.close()
        seconds = time.monotonic() - t0
    assert recorded == n, f"expected {n} bounced events, found {recorded}"
    result = Result("bounces", n, n / seconds, "DSNs/s", target=">= 500 DSNs/s recorded")
    result.met = result.rate >= 500
    return result


def _bounce_env(args: argparse.Namespace) -> dict[str, str]:
    args.inbound_port = _free_port()
    return {"DISPATCHER_BOUNCE_ADDRESS": f"bounces@{BOUNCE_DOMAIN}",
            "DISPATCHER_INBOUND_SMTP": f"127.0.0.1:{args.inbound_port}"}  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SCENARIOS: dict[str, tuple[Callable[[Env], Awaitable[Result]], int]] = {
    # name: (function, receiver ports)
    "deliver": (deliver, 1),
    "deliver-batched": (deliver_batched, 1),
    "deliver-ordered": (deliver_ordered, 1),
    "ingest": (ingest, 1),
    "ingest-filtered": (ingest_filtered, 1),
    "latency": (latency, 1),
    "fanout": (fanout, 20),
    "backlog": (backlog, 1),
    "send": (send, 1),
    "isolation": (isolation, 1),
    "inbound": (inbound, 1),
    "bounces": (bounces, 1),
    "upgrade": (upgrade, 1),
    "history": (history, 1),
    "overview": (overview, 1),
    "purge": (purge.purge, 1),
}
SERVICE_ENV = {
    "isolation": {"DISPATCHER_WEBHOOK_TIMEOUT": ISOLATION_TIMEOUT},
    "purge": purge.SERVICE_ENV,
}  # before --service-env


async def run(args: argparse.Namespace) -> Result:
    fn, ports = SCENARIOS[args.scenario]
    async with environment(args, ports=ports) as env:
        return await fn(env)
