"""Service configuration: every knob, read once from `DISPATCHER_*` environment variables."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_DEFAULT_RETRY_SCHEDULE: list[float] = [5, 300, 1800, 7200, 18000, 36000, 36000]


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All settings; documented one by one in README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="DISPATCHER_", extra="ignore")

    # --- storage ---
    database_url: str | None = Field(
        None, description="PostgreSQL URL. Unset: an embedded PostgreSQL in DATA_DIR/postgres."
    )
    read_database_url: str | None = Field(None, description="Optional read replica for history queries.")
    data_dir: Path = Field(Path("./var"), description="Embedded database, generated keys, maildir.")
    db_pool_min: int = 2
    db_pool_max: int = 20

    # --- http ---
    host: str = "127.0.0.1"
    port: int = 8080
    processes: int = Field(
        1, ge=0, description="`serve` processes sharing the port, each with API and workers (0: one per CPU core)."
    )
    max_body_bytes: int = Field(1024 * 1024, description="Largest accepted request body (413 beyond).")
    rate_limit_per_second: float = Field(100.0, description="Requests per second per API key (0: off).")
    public_url: str | None = Field(
        None, description="Base URL of tracking links in sent mail; unset: http://HOST:PORT as served."
    )
    bootstrap: bool = Field(
        True, description="On an empty database, create account 'default' and print one key on stderr."
    )
    log_level: str = "info"
    log_format: str = Field("auto", description="json | console | auto (console on a TTY).")

    # --- secrets ---
    secret_key: str | None = Field(
        None, description="Fernet key encrypting signing secrets at rest; generated into DATA_DIR if unset."
    )

    # --- callbacks and delivery ---
    allow_http_callbacks: bool = False
    allowed_networks: Annotated[list[ipaddress.IPv4Network | ipaddress.IPv6Network], NoDecode] = Field(
        default_factory=list, description="CIDRs exempt from the SSRF guard, comma separated."
    )
    webhook_timeout: float = Field(10.0, description="Seconds before a webhook attempt times out.")
    retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(_DEFAULT_RETRY_SCHEDULE),
        description="Seconds between attempts, comma separated; exhausted means failed.",
    )
    retry_jitter: float = Field(0.2, description="Fraction of random jitter applied to each retry delay.")
    retry_after_max: float = Field(3600.0, description="Upper bound honoured for a Retry-After header.")
    secret_rotation_grace: float = Field(86400.0, description="Seconds an old signing secret stays valid.")
    failing_after: int = Field(5, description="Consecutive failures that mark a callback failing.")
    failing_probe_interval: float = Field(30.0, description="Seconds between probes of a failing callback.")
    disable_after: float = Field(5 * 86400.0, description="Seconds of continuous failure before disabling.")
    worker_concurrency: int = Field(200, ge=1, description="Webhook requests in flight per worker process.")
    callback_concurrency: int = Field(
        10, ge=1, description="Most requests in flight per callback per worker; a callback earns them by answering."
    )
    claim_batch: int = Field(1000, description="Most deliveries claimed in one round trip.")
    lease_seconds: float = Field(300.0, description="A claimed delivery returns to the queue after this.")
    poll_interval: float = Field(1.0, description="Worker poll interval (LISTEN/NOTIFY wakes it sooner).")
    claim_interval: float = Field(
        0.005, ge=0, description="Least seconds between a worker's claims: wakes closer together share one claim."
    )
    batch_linger: float = Field(0.2, description="Seconds a partial batch waits to fill up.")
    verification_timeout: float = 30.0
    verification_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0],
        description="Seconds between retries of an undelivered ownership handshake; exhausted: failed until resent.",
    )

    # --- sending ---
    mail_url: str | None = Field(None, description="smtp[s]://user:pass@host:port; unset: maildir in DATA_DIR.")
    definition_quota: int = Field(500, description="Send definitions created per rolling 7 days per account.")
    inactive_definition_expiry: float = Field(3 * 86400.0, description="Seconds a send waits for activation.")
    mail_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [60.0, 300.0, 900.0, 3600.0, 7200.0, 14400.0], description="Deferred mail retry delays."
    )
    sender_concurrency: int = Field(20, ge=1, description="SMTP connections open at once per process.")
    render_cpu_seconds: float = Field(
        2.0, gt=0, description="CPU seconds one message's templates may take to render; beyond: failed."
    )
    render_max_value: int = Field(
        1024 * 1024, ge=1024, description="Largest string (characters) or list (items) a template may build."
    )
    render_memory_mb: int = Field(1024, ge=256, description="Address space of each template render process.")
    render_processes: int = Field(2, ge=1, description="Template render processes per `serve` process.")

    # --- event sources (providers' webhooks in) ---
    source_tolerance: float = Field(
        300.0, gt=0, description="Seconds a provider's signed timestamp may be off; older is refused as stale."
    )
    sns_cert_url_pattern: str = Field(
        r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/",
        description="Regex an SNS SigningCertURL or SubscribeURL must match before it is fetched.",
    )
    mail_provider: Literal["ses", "sendgrid", "mailgun", "postmark", "sparkpost", "brevo", "resend"] | None = Field(
        None,
        description="The relay in DISPATCHER_MAIL_URL (ses, sendgrid, mailgun, postmark, sparkpost, brevo, "
        "resend): sent mail carries the messageKey in that provider's header.",
    )

    # --- bounces and complaints by mail ---
    bounce_address: str | None = Field(
        None, pattern=r"^[^@\s+]+@[^@\s]+$",
        description="Envelope sender base, e.g. bounces@mail.example.com: mail goes out as bounces+<token>@…",
    )  # fmt: skip
    inbound_smtp: str | None = Field(
        None, pattern=r"^.+:\d+$", description="host:port of the SMTP listener for bounces and complaints; unset: off."
    )
    inbound_max_bytes: int = Field(10 * 2**20, ge=1024, description="Largest mail the listener accepts (552 beyond).")
    inbound_max_connections: int = Field(
        100, ge=1, description="SMTP connections the listener serves at once (421 beyond)."
    )
    bounce_token_days: float = Field(30.0, gt=0, description="Days a VERP token is honoured after the send.")
    inbound_keep: int = Field(1000, ge=0, description="Unreadable inbound mails kept for inspection (newest).")

    # --- console and portal ---
    console_idle_timeout: float = Field(1800.0, gt=0, description="Seconds a console session may stay idle.")
    console_session_lifetime: float = Field(43200.0, gt=0, description="Seconds a console session lasts at most.")
    portal_frame_ancestors: str = Field(
        "*", description="CSP frame-ancestors of portal pages: the origins that may embed a portal link."
    )

    # --- operations ---
    metrics_token: str | None = Field(None, description="If set, /metrics requires this bearer token.")
    retention_days: float | None = Field(None, description="Purge events, deliveries, attempts older.")
    message_body_retention_days: float | None = Field(None, description="Purge stored rendered bodies.")
    purge_interval: float = 300.0
    purge_batch: int = 1000
    shutdown_grace: float = Field(10.0, description="Seconds in-flight work may finish on SIGTERM.")
    health_db_grace: float = Field(
        60.0, ge=0, description="Seconds the database may stay unreachable before /healthz fails too (0: never)."
    )

    @field_validator("retry_schedule", "mail_retry_schedule", "verification_retry_schedule", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        # Accept "10.1.2.3/8" as 10.0.0.0/8, as operators write it.
        items = _split_list(value)
        if isinstance(items, list):
            return [ipaddress.ip_network(v, strict=False) if isinstance(v, str) else v for v in items]
        return items

    @property
    def tracking_base_url(self) -> str:
        """DISPATCHER_PUBLIC_URL, or the address this process serves, so links work after a port change.
        A wildcard bind address stands for this machine's loopback."""
        if self.public_url:
            return self.public_url
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"
