"""StripeConfig: environment variables, defaults, and validation messages that name the variable."""

from __future__ import annotations

import pytest

from adapters.stripe import StripeConfig, StripeConfigError
from adapters.stripe.config import ENVIRONMENT_NAMES


def test_from_environment_reads_every_setting():
    environment = {
        "STRIPE_SECRET_KEY": "sk_live_abcdefgh",
        "STRIPE_WEBHOOK_SECRET": "whsec_abc",
        "STRIPE_API_BASE": "https://stripe-proxy.example.org:8443",
        "STRIPE_CONNECT_TIMEOUT_MS": "2000",
        "STRIPE_REQUEST_TIMEOUT_MS": "9000",
        "STRIPE_MAX_NETWORK_RETRIES": "3",
        "STRIPE_RATE_LIMIT_PER_SECOND": "50.5",
        "STRIPE_SEARCH_RATE_LIMIT_PER_SECOND": "10",
        "STRIPE_RATE_LIMIT_WAIT_MAX_MS": "250",
        "STRIPE_WEBHOOK_TOLERANCE_S": "120",
        "STRIPE_LOOKUP_WINDOW_S": "600",
        "STRIPE_LOOKUP_SCAN_MAX": "500",
        "UNRELATED": "ignored",
    }

    config = StripeConfig.from_environment(environment)

    assert set(ENVIRONMENT_NAMES.values()) <= set(environment)
    assert config == StripeConfig(
        secret_key="sk_live_abcdefgh",
        webhook_secret="whsec_abc",
        api_base="https://stripe-proxy.example.org:8443",
        connect_timeout_ms=2000,
        request_timeout_ms=9000,
        max_network_retries=3,
        rate_limit_per_second=50.5,
        search_rate_limit_per_second=10.0,
        rate_limit_wait_max_ms=250,
        webhook_tolerance_s=120,
        lookup_window_s=600,
        lookup_scan_max=500,
    )
    assert config.operations_per_second == 50.5


def test_defaults_follow_stripes_documented_limits():
    test_mode = StripeConfig.from_environment({"STRIPE_SECRET_KEY": "sk_test_abcdefgh"})
    live_mode = StripeConfig(secret_key="rk_live_abcdefgh")

    assert (test_mode.operations_per_second, live_mode.operations_per_second) == (25.0, 100.0)
    assert test_mode.api_base == "https://api.stripe.com"
    assert test_mode.webhook_tolerance_s == 300
    assert test_mode.webhook_secret is None


def test_secrets_stay_out_of_repr():
    config = StripeConfig(secret_key="sk_test_verysecret", webhook_secret="whsec_verysecret")

    assert "verysecret" not in repr(config)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({}, "STRIPE_SECRET_KEY is required"),
        ({"STRIPE_SECRET_KEY": "pk_test_abcdefgh"}, "publishable key"),
        ({"STRIPE_SECRET_KEY": "sk_test_abcdefgh", "STRIPE_API_BASE": "ftp://stripe"}, "STRIPE_API_BASE"),
        ({"STRIPE_SECRET_KEY": "sk_test_abcdefgh", "STRIPE_API_BASE": "http://stripe.example.org"}, "localhost"),
        ({"STRIPE_SECRET_KEY": "sk_live_abcdefgh", "STRIPE_API_BASE": "http://localhost:8420"}, "live key"),
        ({"STRIPE_SECRET_KEY": "sk_test_abcdefgh", "STRIPE_API_BASE": "https://a.org/v1"}, "no path"),
        ({"STRIPE_SECRET_KEY": "sk_test_abcdefgh", "STRIPE_REQUEST_TIMEOUT_MS": "soon"}, "must be an integer"),
        ({"STRIPE_SECRET_KEY": "sk_test_abcdefgh", "STRIPE_REQUEST_TIMEOUT_MS": "0"}, "STRIPE_REQUEST_TIMEOUT_MS"),
        ({"STRIPE_SECRET_KEY": "sk_test_abcdefgh", "STRIPE_MAX_NETWORK_RETRIES": "-1"}, "STRIPE_MAX_NETWORK_RETRIES"),
        ({"STRIPE_SECRET_KEY": "sk_test_abcdefgh", "STRIPE_RATE_LIMIT_PER_SECOND": "0"}, "positive number"),
        ({"STRIPE_SECRET_KEY": "sk_test_abcdefgh", "STRIPE_WEBHOOK_TOLERANCE_S": "0"}, "STRIPE_WEBHOOK_TOLERANCE_S"),
    ],
)
def test_invalid_settings_are_named(environment: dict[str, str], message: str):
    with pytest.raises(StripeConfigError, match=message):
        StripeConfig.from_environment(environment)


def test_every_problem_is_reported_at_once():
    with pytest.raises(StripeConfigError) as raised:
        StripeConfig(secret_key="nope", connect_timeout_ms=0, lookup_window_s=1)

    assert all(name in str(raised.value) for name in ("STRIPE_SECRET_KEY", "CONNECT_TIMEOUT", "LOOKUP_WINDOW"))
