"""The Stripe adapter: ``StripeProcessor(StripeConfig.from_environment(os.environ))``.

Modules: ``config`` (settings, ``STRIPE_*`` variables), ``client`` (HTTP plumbing, rate limiter), ``transformers``
(wire format to adapter types), ``webhooks`` (signature verification), ``processor`` (the Processor itself).
"""

from adapters.stripe.config import StripeConfig, StripeConfigError
from adapters.stripe.processor import StripeProcessor, StripeRequestError

__all__ = ["StripeConfig", "StripeConfigError", "StripeProcessor", "StripeRequestError"]
