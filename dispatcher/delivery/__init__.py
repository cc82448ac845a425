"""Webhook delivery: signing, retry policy, the guarded outbound HTTP client, and the worker."""
