"""The localstripe fixtures of tests/stripe for the recurring tests that run against it."""

from tests.stripe.conftest import (  # noqa: F401 (fixtures, used by name)
    empty_localstripe,
    localstripe_url,
    processor,
    stripe_client,
)
