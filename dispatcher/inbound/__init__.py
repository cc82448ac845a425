"""Event sources: providers' webhooks in (adapters in providers/), one lifecycle out (ingest.py)."""
