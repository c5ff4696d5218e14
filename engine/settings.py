"""Configuration: environment variables (``SURGE_*``, ``DATABASE_URL``) overridden by command-line flags,
validated once at start-up with messages that name the setting."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import platformdirs

from adapters.registry import KINDS
from engine.receipts.senders import SmtpServer
from engine.recurring.dunning import RetrySchedule
from toolkit.settings import EnvironmentSettings, SettingsError, boolean, integer, number, path, text

PROCESSOR_KINDS = KINDS  # adapters/registry.py


class ConfigError(SettingsError):
    """The engine's settings are unusable; the message names each bad variable."""


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("surge")))
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    pool_size_max: int = 20
    batch_size_max: int = 1000
    batch_delay_ms: float = 0.0  # each batcher's delay unless its own is set
    # Per batcher: a batch below its minimum waits up to its delay for more items (natural group commit when the
    # minimum is 1, the default: whatever is queued goes at once). Intake answers donors; settlement follows the
    # processor's answers, which can wait a little to share a commit.
    intake_batch_size_min: int = 1
    intake_batch_delay_ms: float | None = None
    settle_batch_size_min: int = 1
    settle_batch_delay_ms: float | None = None
    queue_size_max: int = 20_000
    committers: int = 2
    log_level: str = "INFO"
    # Processors in priority order, "name=kind" or "kind" (kinds: PROCESSOR_KINDS); failover goes down the list.
    processors: str = "simulated"
    processor_rate_per_s: float = 100.0  # per processor account, shared by all workers
    processor_concurrency_max: int = 64  # per worker
    charge_timeout_ms: int = 8_000
    in_flight_max: int = 2_000
    queue_depth_max: int = 200_000
    velocity_declines_max: int = 5
    velocity_window_s: int = 600
    # Deprecated spelling of one trusted hop (SURGE_TRUSTED_PROXY_HOPS=1); kept so existing deployments still work.
    trust_forwarded_for: bool = False
    # Proxies in front of the engine that each append the address they saw to X-Forwarded-For. The client is the
    # address that many entries from the right; 0 trusts no header and uses the connection's peer address.
    trusted_proxy_hops: int = 0
    velocity_challenge_ratio: float = 0.3  # decline ratio from one source that asks for the challenge
    velocity_refuse_ratio: float = 0.6  # ... that refuses, with velocity_refuse_cards_min distinct cards declined
    velocity_refuse_cards_min: int = 3
    # The donation page's challenge (engine/pipeline/challenge.py): none, test (never in production) or siteverify
    # (hCaptcha / Turnstile: the provider's siteverify URL and secret).
    challenge_verifier: str = "none"
    challenge_verify_url: str | None = None
    challenge_secret: str | None = None
    challenge_timeout_ms: int = 3_000
    challenge_site_key: str | None = None  # the widget's public site key, shown on the donation page
    # A donation whose processor keeps answering "pending" / "unknown" is flagged for finance's review after this
    # many processor calls or this many hours, whichever comes first (it still settles if the processor answers).
    review_after_lookups: int = 20
    review_after_hours: float = 24.0
    # Receipts (engine/receipts/): an SMTP server (smtp://user:pass@host:587 STARTTLS, smtps://…:465 TLS,
    # smtp+insecure://host:25), or without one .eml files under home/outbox; the sender address; the relay's limits.
    smtp_url: str | None = None
    receipts_from: str = "Surge receipts <receipts@surge.localhost>"
    receipt_send_timeout_ms: int = 30_000
    receipt_attempts_max: int = 10
    receipt_retry_delay_ms: int = 1_000  # before the second attempt, doubled after each failure
    receipt_retry_delay_max_s: float = 600.0
    receipt_poll_interval_ms: int = 500
    # Whether this process sends receipts. Off on engine hosts that should spend their cores on donations while
    # other hosts (or a `surge serve` with it on) send: receipts are still written to the outbox with the money.
    receipt_relay: bool = True
    # Scale-out (README "Running at scale"). The processor's budget: local (each process rate ÷ workers) or shared
    # by every engine host (PostgreSQL, or Redis when redis_url is set): engine/pipeline/budget.py.
    processor_budget: str = "local"
    redis_url: str | None = None
    # Behind PgBouncer in transaction mode: no prepared-statement cache; migrations and session advisory locks go
    # over direct_database_url. replica_url: a streaming replica for reads that decide no money.
    database_pgbouncer: bool = False
    direct_database_url: str | None = None
    replica_url: str | None = None
    # Recurring gifts and Quick Donate (engine/recurring/): the scheduler's poll, the dunning schedule (days
    # between attempts after a failure; "" for no retries), the key that signs donors' links (unset: a random key
    # per process start, so links die with it — set it in production, the same in every process) and how long
    # links live, and the engine's public address that links point to.
    recurring_poll_ms: int = 1_000
    recurring_retry_days: str = "3,5,7,7"
    recurring_link_secret: str | None = None
    recurring_link_ttl_hours: float = 72.0
    public_url: str = "http://127.0.0.1:8000"

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.port < 65536:
            problems.append(f"SURGE_PORT must be 1-65535, got {self.port}")
        if not 1 <= self.workers <= 64:
            problems.append(f"SURGE_WORKERS must be 1-64, got {self.workers}")
        if not 2 <= self.pool_size_max <= 500:
            problems.append(f"SURGE_POOL_SIZE_MAX must be 2-500, got {self.pool_size_max}")
        if not 1 <= self.batch_size_max <= 100_000:
            problems.append(f"SURGE_BATCH_SIZE_MAX must be 1-100000, got {self.batch_size_max}")
        if not 0 <= self.batch_delay_ms <= 1000:
            problems.append(f"SURGE_BATCH_DELAY_MS must be 0-1000, got {self.batch_delay_ms}")
        for batcher in ("intake", "settle"):
            size_min, delay_ms = getattr(self, f"{batcher}_batch_size_min"), getattr(self, f"{batcher}_batch_delay_ms")
            variable = f"SURGE_{batcher.upper()}_BATCH"
            if not 1 <= size_min <= self.batch_size_max:
                problems.append(f"{variable}_SIZE_MIN must be 1-{self.batch_size_max}, got {size_min}")
            if delay_ms is not None and not 0 <= delay_ms <= 1000:
                problems.append(f"{variable}_DELAY_MS must be 0-1000, got {delay_ms}")
        if not 1 <= self.queue_size_max <= 10_000_000:
            problems.append(f"SURGE_QUEUE_SIZE_MAX must be 1-10000000, got {self.queue_size_max}")
        if not 1 <= self.committers <= 16:
            problems.append(f"SURGE_COMMITTERS must be 1-16, got {self.committers}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"SURGE_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        if self.processor_rate_per_s <= 0 or self.processor_concurrency_max < 1:
            problems.append("SURGE_PROCESSOR_RATE_PER_S must be > 0 and SURGE_PROCESSOR_CONCURRENCY_MAX >= 1")
        if not 100 <= self.charge_timeout_ms <= 120_000:
            problems.append(f"SURGE_CHARGE_TIMEOUT_MS must be 100-120000, got {self.charge_timeout_ms}")
        if self.in_flight_max < 1 or self.queue_depth_max < 1:
            problems.append("SURGE_IN_FLIGHT_MAX and SURGE_QUEUE_DEPTH_MAX must be at least 1")
        if self.velocity_declines_max < 1 or self.velocity_window_s < 1:
            problems.append("SURGE_VELOCITY_DECLINES_MAX and SURGE_VELOCITY_WINDOW_S must be at least 1")
        if not 0 <= self.trusted_proxy_hops <= 16:
            problems.append(f"SURGE_TRUSTED_PROXY_HOPS must be 0-16, got {self.trusted_proxy_hops}")
        if not 0 < self.velocity_challenge_ratio <= self.velocity_refuse_ratio <= 1:
            problems.append(
                "SURGE_VELOCITY_CHALLENGE_RATIO and SURGE_VELOCITY_REFUSE_RATIO must satisfy "
                "0 < challenge <= refuse <= 1"
            )
        if self.velocity_refuse_cards_min < 1:
            problems.append("SURGE_VELOCITY_REFUSE_CARDS_MIN must be at least 1")
        if self.challenge_verifier not in ("none", "test", "siteverify"):
            problems.append(
                f"SURGE_CHALLENGE_VERIFIER must be none, test or siteverify, got {self.challenge_verifier!r}"
            )
        elif self.challenge_verifier == "siteverify" and not (self.challenge_verify_url and self.challenge_secret):
            problems.append(
                "SURGE_CHALLENGE_VERIFIER=siteverify needs SURGE_CHALLENGE_VERIFY_URL and SURGE_CHALLENGE_SECRET"
            )
        if self.challenge_verify_url is not None and not self.challenge_verify_url.startswith(("https://", "http://")):
            problems.append("SURGE_CHALLENGE_VERIFY_URL must be an http(s) URL")
        if not 100 <= self.challenge_timeout_ms <= 60_000:
            problems.append(f"SURGE_CHALLENGE_TIMEOUT_MS must be 100-60000, got {self.challenge_timeout_ms}")
        if self.review_after_lookups < 1 or self.review_after_hours <= 0:
            problems.append("SURGE_REVIEW_AFTER_LOOKUPS must be at least 1 and SURGE_REVIEW_AFTER_HOURS above 0")
        problems.extend(self._receipt_problems())
        problems.extend(self._scale_out_problems())
        problems.extend(self._recurring_problems())
        try:
            self.processor_specs()
        except ValueError as error:
            problems.append(str(error))
        if self.database_url is not None and not self.database_url.startswith(("postgres://", "postgresql://")):
            problems.append("DATABASE_URL must start with postgresql:// or postgres://")
        if problems:
            raise ConfigError.listing("invalid configuration", problems)

    def _scale_out_problems(self) -> list[str]:
        problems = []
        if self.processor_budget not in ("local", "shared"):
            problems.append(f"SURGE_PROCESSOR_BUDGET must be local or shared, got {self.processor_budget!r}")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append("SURGE_REDIS_URL must start with redis://, rediss:// or unix://")
        if self.database_pgbouncer and not self.direct_database_url:
            problems.append("SURGE_DATABASE_PGBOUNCER needs SURGE_DIRECT_DATABASE_URL (migrations bypass PgBouncer)")
        urls = (("SURGE_DIRECT_DATABASE_URL", self.direct_database_url), ("SURGE_REPLICA_URL", self.replica_url))
        for name, url in urls:
            if url is not None and not url.startswith(("postgres://", "postgresql://")):
                problems.append(f"{name} must start with postgresql:// or postgres://")
        return problems

    def _receipt_problems(self) -> list[str]:
        problems = []
        if self.smtp_url is not None:
            try:
                SmtpServer.from_url(self.smtp_url)
            except ValueError as error:
                problems.append(str(error))
        if "@" not in parseaddr(self.receipts_from)[1]:
            problems.append(f"SURGE_RECEIPTS_FROM must be an email address, got {self.receipts_from!r}")
        if not 100 <= self.receipt_send_timeout_ms <= 300_000:
            problems.append(f"SURGE_RECEIPT_SEND_TIMEOUT_MS must be 100-300000, got {self.receipt_send_timeout_ms}")
        if not 1 <= self.receipt_attempts_max <= 100:
            problems.append(f"SURGE_RECEIPT_ATTEMPTS_MAX must be 1-100, got {self.receipt_attempts_max}")
        if not 1 <= self.receipt_retry_delay_ms <= self.receipt_retry_delay_max_s * 1000:
            problems.append(
                "SURGE_RECEIPT_RETRY_DELAY_MS must be at least 1 and within SURGE_RECEIPT_RETRY_DELAY_MAX_S"
            )
        if not 1 <= self.receipt_poll_interval_ms <= 60_000:
            problems.append(f"SURGE_RECEIPT_POLL_INTERVAL_MS must be 1-60000, got {self.receipt_poll_interval_ms}")
        return problems

    def _recurring_problems(self) -> list[str]:
        problems = []
        if not 10 <= self.recurring_poll_ms <= 600_000:
            problems.append(f"SURGE_RECURRING_POLL_MS must be 10-600000, got {self.recurring_poll_ms}")
        try:
            RetrySchedule.parse(self.recurring_retry_days)
        except ValueError as error:
            problems.append(f"SURGE_RECURRING_RETRY_DAYS: {error}")
        if self.recurring_link_secret is not None and len(self.recurring_link_secret) < 32:
            problems.append("SURGE_RECURRING_LINK_SECRET must be at least 32 characters")
        if not 0 < self.recurring_link_ttl_hours <= 24 * 90:
            problems.append("SURGE_RECURRING_LINK_TTL_HOURS must be above 0 and at most 2160")
        if not self.public_url.startswith(("https://", "http://")):
            problems.append("SURGE_PUBLIC_URL must be an http(s) URL")
        return problems

    def processor_specs(self) -> list[tuple[str, str]]:
        """(name, kind) pairs in priority order."""
        specs = []
        for part in self.processors.split(","):
            name, _, kind = part.strip().partition("=")
            kind = kind or name
            if not re.match(r"^[a-z][a-z0-9_-]{0,30}$", name) or kind not in PROCESSOR_KINDS:
                raise ValueError(
                    f"SURGE_PROCESSORS entry {part.strip()!r} must be name=kind with kind one of "
                    f"{sorted(PROCESSOR_KINDS)}"
                )
            specs.append((name, kind))
        if len({name for name, _ in specs}) != len(specs):
            raise ValueError("SURGE_PROCESSORS names must be unique")
        return specs

    @property
    def forwarded_hops(self) -> int:
        """How many X-Forwarded-For entries, counted from the right, were appended by proxies we trust."""
        if self.trusted_proxy_hops:
            return self.trusted_proxy_hops
        return 1 if self.trust_forwarded_for else 0

    @property
    def postgres_folder(self) -> Path:
        return self.home / "postgres"

    @property
    def outbox_folder(self) -> Path:
        """Where receipts are written as .eml files when no SMTP server is configured."""
        return self.home / "outbox"

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


ENVIRONMENT = EnvironmentSettings(
    "SURGE_",
    {
        "home": path(),
        "database_url": text(),
        "host": text(),
        "port": integer(),
        "workers": integer(),
        "pool_size_max": integer(),
        "batch_size_max": integer(),
        "batch_delay_ms": number(),
        "intake_batch_size_min": integer(),
        "intake_batch_delay_ms": number(),
        "settle_batch_size_min": integer(),
        "settle_batch_delay_ms": number(),
        "queue_size_max": integer(),
        "committers": integer(),
        "log_level": text(),
        "processors": text(),
        "processor_rate_per_s": number(),
        "processor_concurrency_max": integer(),
        "charge_timeout_ms": integer(),
        "in_flight_max": integer(),
        "queue_depth_max": integer(),
        "velocity_declines_max": integer(),
        "velocity_window_s": integer(),
        "trust_forwarded_for": boolean(),
        "trusted_proxy_hops": integer(),
        "velocity_challenge_ratio": number(),
        "velocity_refuse_ratio": number(),
        "velocity_refuse_cards_min": integer(),
        "challenge_verifier": text(),
        "challenge_verify_url": text(),
        "challenge_secret": text(),
        "challenge_timeout_ms": integer(),
        "challenge_site_key": text(),
        "review_after_lookups": integer(),
        "review_after_hours": number(),
        "smtp_url": text(),
        "receipts_from": text(),
        "receipt_send_timeout_ms": integer(),
        "receipt_attempts_max": integer(),
        "receipt_retry_delay_ms": integer(),
        "receipt_retry_delay_max_s": number(),
        "receipt_poll_interval_ms": integer(),
        "receipt_relay": boolean(),
        "processor_budget": text(),
        "redis_url": text(),
        "database_pgbouncer": boolean(),
        "direct_database_url": text(),
        "replica_url": text(),
        "recurring_poll_ms": integer(),
        "recurring_retry_days": text(),
        "recurring_link_secret": text(),
        "recurring_link_ttl_hours": number(),
        "public_url": text(),
    },
    names={"database_url": "DATABASE_URL"},
)


def load_settings(environment: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, then ``overrides`` (flags); raises ConfigError with every problem found."""
    values = ENVIRONMENT.read(environment, heading="invalid configuration", error=ConfigError)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
