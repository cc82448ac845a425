"""`python -m bench <scenario> [--events N] [--json]`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import warnings

from bench.report import emit
from bench.scenarios import SCENARIOS, NotAvailable, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="Benchmark dispatcher against a raw baseline.")
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--events", type=int, help="events to use (default: sized per scenario)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--rate", type=float, help="latency, isolation: events per second offered (1,000; 200)")
    p.add_argument(
        "--duration", type=float, default=20.0, help="latency, isolation: seconds (per phase) unless --events"
    )
    p.add_argument("--hanging", type=int, default=100, help="isolation: callbacks whose receivers never answer")
    p.add_argument("--backlog", type=int, default=1_000_000, help="backlog: pending deliveries to insert")
    p.add_argument("--history", type=int, default=10_000_000, help="history: events stored over 30 days (10,000,000)")
    p.add_argument("--day-events", type=int, default=300_000, help="purge: events stored per day (300,000)")
    p.add_argument("--drop-days", type=int, default=8, help="purge: days dropped while ingest is measured")
    p.add_argument("--rounds", type=int, default=5, help="deliver-ordered: measured rounds of each kind (5)")
    p.add_argument("--profile", metavar="DIR", help="record the service with py-spy during measurement")
    p.add_argument("--split", action="store_true", help="run the service as an API and a worker process")
    p.add_argument("--processes", type=int, default=1, help="`serve --processes N` (0: one per CPU core)")
    p.add_argument(
        "--service-env", action="append", default=[], metavar="NAME=VALUE",
        help="extra environment for the service, e.g. DISPATCHER_CALLBACK_CONCURRENCY=50 (experiments)",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", module="platformdirs")
    try:
        result = asyncio.run(run(args))
    except NotAvailable as exc:
        print(f"{args.scenario}: not available: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    emit(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
