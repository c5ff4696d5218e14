"""Stripe adapter configuration, read from ``STRIPE_*`` environment variables (through toolkit.settings) and
validated once, with every problem named by its variable. Secrets never appear in ``repr``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from toolkit.settings import EnvironmentSettings, SettingsError, integer, number, required, text

DEFAULT_API_BASE = "https://api.stripe.com"

# Stripe's documented API rate limits (docs.stripe.com/rate-limits): 100 operations per second in live mode,
# 25 in test mode (sandboxes); the Search API has its own limit of 20 read operations per second.
LIVE_MODE_OPERATIONS_PER_SECOND = 100.0
TEST_MODE_OPERATIONS_PER_SECOND = 25.0
SEARCH_OPERATIONS_PER_SECOND = 20.0

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_HEADING = "invalid Stripe configuration"


class StripeConfigError(SettingsError):
    """The Stripe configuration is unusable; the message lists every problem."""


@dataclass(frozen=True, slots=True)
class StripeConfig:
    secret_key: str = field(repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    api_base: str = DEFAULT_API_BASE
    connect_timeout_ms: int = 5_000  # per attempt, establishing the connection
    request_timeout_ms: int = 30_000  # per attempt, whole request and response
    max_network_retries: int = 2  # the SDK's own retries, always with the same idempotency key
    rate_limit_per_second: float | None = None  # None: Stripe's documented limit for the key's mode
    search_rate_limit_per_second: float = SEARCH_OPERATIONS_PER_SECOND
    rate_limit_wait_max_ms: int = 1_000  # longer than this for a token: RETRYABLE without calling Stripe
    webhook_tolerance_s: int = 300  # older signed timestamps are rejected (replay protection)
    lookup_window_s: int = 3_600  # lookup by key lists PaymentIntents this recent (search can lag up to an hour)
    lookup_scan_max: int = 2_000  # PaymentIntents a lookup may list before answering UNKNOWN instead of NOT_FOUND

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise StripeConfigError.listing(_HEADING, problems)

    @property
    def live_mode(self) -> bool:
        return self.secret_key.startswith(("sk_live_", "rk_live_"))

    @property
    def operations_per_second(self) -> float:
        if self.rate_limit_per_second is not None:
            return self.rate_limit_per_second
        return LIVE_MODE_OPERATIONS_PER_SECOND if self.live_mode else TEST_MODE_OPERATIONS_PER_SECOND

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> StripeConfig:
        """The configuration from ``STRIPE_*`` variables (see :data:`ENVIRONMENT`); unset or empty ones take their
        defaults, except ``STRIPE_SECRET_KEY`` which is required."""
        values = ENVIRONMENT.read(environment, heading=_HEADING, error=StripeConfigError)
        return cls(**values)


ENVIRONMENT = EnvironmentSettings(
    "STRIPE_",
    {
        "secret_key": required(text(), "a secret key sk_... or restricted key rk_..."),
        "webhook_secret": text(),
        "api_base": text(),
        "connect_timeout_ms": integer(),
        "request_timeout_ms": integer(),
        "max_network_retries": integer(),
        "rate_limit_per_second": number(),
        "search_rate_limit_per_second": number(),
        "rate_limit_wait_max_ms": integer(),
        "webhook_tolerance_s": integer(),
        "lookup_window_s": integer(),
        "lookup_scan_max": integer(),
    },
)
ENVIRONMENT_NAMES: dict[str, str] = ENVIRONMENT.variables


def _problems(config: StripeConfig) -> list[str]:
    problems = _key_problems(config) + _address_problems(config)
    bounds = {
        "connect_timeout_ms": (1, 600_000),
        "request_timeout_ms": (1, 600_000),
        "max_network_retries": (0, 10),
        "rate_limit_wait_max_ms": (0, 60_000),
        "webhook_tolerance_s": (1, 86_400),
        "lookup_window_s": (60, 7 * 86_400),
        "lookup_scan_max": (1, 1_000_000),
    }
    for name, (low, high) in bounds.items():
        value = getattr(config, name)
        if type(value) is not int or not low <= value <= high:
            problems.append(f"{ENVIRONMENT_NAMES[name]} must be an integer {low}-{high}, got {value!r}")
    rates = {"rate_limit_per_second": config.rate_limit_per_second}
    rates["search_rate_limit_per_second"] = config.search_rate_limit_per_second
    for name, rate in rates.items():
        if rate is not None and (not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0):
            problems.append(f"{ENVIRONMENT_NAMES[name]} must be a positive number, got {rate!r}")
    return problems


def _key_problems(config: StripeConfig) -> list[str]:
    problems = []
    key = config.secret_key
    if not isinstance(key, str) or not key.startswith(("sk_", "rk_")) or len(key) < 8:
        hint = " (that is a publishable key; use the secret key)" if isinstance(key, str) and key[:3] == "pk_" else ""
        problems.append(f"STRIPE_SECRET_KEY must be a secret key sk_... or restricted key rk_...{hint}")
    secret = config.webhook_secret
    if secret is not None and (not isinstance(secret, str) or not secret.strip()):
        problems.append("STRIPE_WEBHOOK_SECRET must not be empty when set (Stripe's endpoint secret, whsec_...)")
    return problems


def _address_problems(config: StripeConfig) -> list[str]:
    parts = urlsplit(config.api_base)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return [f"STRIPE_API_BASE must be an http(s) address such as {DEFAULT_API_BASE}, got {config.api_base!r}"]
    if parts.path.strip("/") or parts.query or parts.fragment:
        return [f"STRIPE_API_BASE must be scheme, host and port only (no path), got {config.api_base!r}"]
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        # The secret key travels in every request's Authorization header.
        return ["STRIPE_API_BASE may use plain http only on this machine (localhost); use https"]
    if config.live_mode and parts.scheme != "https":
        return ["a live key (sk_live_/rk_live_) must not be sent over plain http: check STRIPE_API_BASE"]
    return []
