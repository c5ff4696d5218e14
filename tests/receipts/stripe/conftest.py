"""The Stripe adapter's fixtures (a real localstripe), for the receipts tests that charge through it."""

from tests.stripe.conftest import empty_localstripe, localstripe_url, processor, stripe_client, surge_on_stripe

__all__ = ["empty_localstripe", "localstripe_url", "processor", "stripe_client", "surge_on_stripe"]
