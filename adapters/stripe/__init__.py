"""The Stripe adapter: ``StripeProcessor(StripeConfig.from_environment(os.environ))``.

``ADAPTER`` declares the kind to the registry (adapters/spec.py). Modules: ``config`` (settings, ``STRIPE_*``
variables), ``client`` (HTTP plumbing, rate limiter), ``transformers`` (wire format to adapter types), ``webhooks``
(signature verification), ``processor`` (the Processor itself).

The processor, and with it the Stripe SDK, is imported on first use: registering the kind costs nothing to an engine
or a command line that never talks to Stripe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from adapters.base import Processor
from adapters.spec import AdapterSpec
from adapters.stripe.config import StripeConfig, StripeConfigError

if TYPE_CHECKING:
    from adapters.stripe.processor import StripeProcessor, StripeRequestError

_LAZY_NAMES = frozenset({"StripeProcessor", "StripeRequestError"})


def _build(name: str, pool: asyncpg.Pool, config: StripeConfig) -> Processor:
    from adapters.stripe.processor import StripeProcessor

    return StripeProcessor(config, name=name)


# Settings from STRIPE_* variables. Stripe pays out the *available* balance (charges become available days later),
# so its payouts are matched one by one rather than against the whole clearing balance.
ADAPTER = AdapterSpec("stripe", StripeConfig.from_environment, _build, payouts_sweep_balance=False)


def __getattr__(name: str) -> object:
    if name in _LAZY_NAMES:
        from adapters.stripe import processor

        return getattr(processor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ADAPTER", "StripeConfig", "StripeConfigError", "StripeProcessor", "StripeRequestError"]
