"""Translation between Stripe's wire format and the adapter types. Pure functions over JSON-shaped mappings
(``StripeObject.to_dict()`` or a parsed webhook body), so one translation serves API responses and webhooks alike.

Modules, by what they translate: ``amounts`` (Money to Stripe's units and back, Stripe's currency quirks),
``errors`` (a failed call's meaning), ``charges`` (PaymentIntents), ``refunds``, ``events`` (webhooks),
``balance_transactions`` (for reconciliation) and ``objects`` (expandable fields, metadata). The processor uses them
through this package, as ``transformers.to_stripe_amount(...)``.
"""

from adapters.stripe.transformers.amounts import (
    STRIPE_THREE_DECIMAL_CURRENCIES,
    STRIPE_ZERO_DECIMAL_CURRENCIES,
    UnrepresentableAmountError,
    from_stripe_amount,
    stripe_exponent,
    to_stripe_amount,
)
from adapters.stripe.transformers.balance_transactions import (
    balance_transaction_fee,
    balance_transaction_from_stripe,
    balance_transaction_type,
    source_donation_id,
    source_payment_intent,
)
from adapters.stripe.transformers.charges import (
    charge_fee,
    charge_result_from_payment_intent,
    most_advanced,
    unexpanded_balance_transaction,
)
from adapters.stripe.transformers.errors import (
    ClassifiedError,
    ErrorKind,
    charge_result_from_error,
    classify_error,
    refund_result_from_error,
)
from adapters.stripe.transformers.events import processor_event_from_stripe_event
from adapters.stripe.transformers.objects import donation_id_of
from adapters.stripe.transformers.refunds import (
    refund_matches,
    refund_metadata,
    refund_result_from_refund,
    refund_status_of,
    surge_refund_id_of,
)

__all__ = [
    "STRIPE_THREE_DECIMAL_CURRENCIES",
    "STRIPE_ZERO_DECIMAL_CURRENCIES",
    "ClassifiedError",
    "ErrorKind",
    "UnrepresentableAmountError",
    "balance_transaction_fee",
    "balance_transaction_from_stripe",
    "balance_transaction_type",
    "charge_fee",
    "charge_result_from_error",
    "charge_result_from_payment_intent",
    "classify_error",
    "donation_id_of",
    "from_stripe_amount",
    "most_advanced",
    "processor_event_from_stripe_event",
    "refund_matches",
    "refund_metadata",
    "refund_result_from_error",
    "refund_result_from_refund",
    "refund_status_of",
    "source_donation_id",
    "source_payment_intent",
    "stripe_exponent",
    "surge_refund_id_of",
    "to_stripe_amount",
    "unexpanded_balance_transaction",
]
