"""Benchmark harness for dispatcher: `python -m bench <scenario> [--events N] [--json]`.

Every scenario starts what it measures (PostgreSQL, a real `dispatcher serve` subprocess, a webhook
receiver process), measures a raw baseline doing the same physical work without the service in the
same run, reports the ratio, and tears everything down. See bench/README.md.
"""
