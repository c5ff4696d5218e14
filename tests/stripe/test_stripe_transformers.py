"""Wire-format translation without I/O: amounts, statuses, error classes, balance transaction types and idempotency
keys."""

from __future__ import annotations

import pytest
import stripe

from adapters.base import BalanceTransactionType, ChargeStatus, RefundStatus
from adapters.stripe import transformers
from adapters.stripe.processor import stripe_idempotency_key
from ledger.money import Money


@pytest.mark.parametrize(
    ("money", "wire"),
    [
        (Money(2500, "USD"), (2500, "usd")),
        (Money(500, "JPY"), (500, "jpy")),  # zero-decimal: yen at both ends
        (Money(10_000, "KRW"), (10_000, "krw")),
        (Money(1250, "BHD"), (1250, "bhd")),  # three decimals at both ends
        (Money(500, "ISK"), (50_000, "isk")),  # ISO: whole krónur; Stripe: two decimals
        (Money(12_300, "MGA"), (123, "mga")),  # ISO: two decimals; Stripe: zero-decimal
        (Money(-700, "EUR"), (-700, "eur")),
    ],
)
def test_amounts_to_stripe_and_back(money: Money, wire: tuple[int, str]):
    assert transformers.to_stripe_amount(money) == wire
    assert transformers.from_stripe_amount(*wire) == money


@pytest.mark.parametrize(("amount", "currency"), [(150, "MGA")])
def test_amount_stripe_cannot_express(amount: int, currency: str):
    with pytest.raises(transformers.UnrepresentableAmountError):
        transformers.to_stripe_amount(Money(amount, currency))


def test_stripe_amount_with_no_iso_equivalent():
    with pytest.raises(transformers.UnrepresentableAmountError):
        transformers.from_stripe_amount(12_345, "isk")  # 123.45 krónur


def intent(status: str, **fields: object) -> dict[str, object]:
    return {"id": "pi_1", "object": "payment_intent", "amount": 2500, "currency": "usd", "status": status} | fields


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("succeeded", ChargeStatus.SUCCEEDED),
        ("processing", ChargeStatus.PENDING),
        ("requires_action", ChargeStatus.PENDING),
        ("requires_capture", ChargeStatus.PENDING),
        ("requires_confirmation", ChargeStatus.FAILED),
        ("requires_payment_method", ChargeStatus.FAILED),
        ("canceled", ChargeStatus.FAILED),
        ("something_new", ChargeStatus.UNKNOWN),
    ],
)
def test_payment_intent_statuses(status: str, expected: ChargeStatus):
    result = transformers.charge_result_from_payment_intent(intent(status))

    assert result.status is expected
    assert result.processor_reference == "pi_1"
    assert result.fee is None  # nothing expanded


def test_decline_reported_on_the_payment_intent_prefers_the_decline_code():
    error = {
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    }

    result = transformers.charge_result_from_payment_intent(intent("requires_payment_method", last_payment_error=error))

    assert (result.status, result.decline_code) == (ChargeStatus.DECLINED, "insufficient_funds")


def test_fee_comes_from_the_expanded_balance_transaction_in_its_own_currency():
    charge = {"id": "ch_1", "balance_transaction": {"id": "txn_1", "fee": 103, "currency": "eur"}}

    result = transformers.charge_result_from_payment_intent(intent("succeeded", latest_charge=charge))

    assert result.fee == Money(103, "EUR")
    assert transformers.unexpanded_balance_transaction({"latest_charge": {"balance_transaction": "txn_2"}}) == "txn_2"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("succeeded", RefundStatus.SUCCEEDED),
        ("pending", RefundStatus.PENDING),
        ("requires_action", RefundStatus.PENDING),
        ("failed", RefundStatus.FAILED),
        ("canceled", RefundStatus.FAILED),
        ("novel", RefundStatus.UNKNOWN),
    ],
)
def test_refund_statuses(status: str, expected: RefundStatus):
    assert transformers.refund_result_from_refund({"id": "re_1", "status": status}).status is expected


def card_error() -> stripe.CardError:
    body = {"error": {"type": "card_error", "code": "card_declined", "decline_code": "do_not_honor",
                      "message": "Your card was declined.", "payment_intent": {"id": "pi_9"}}}  # fmt: skip
    return stripe.CardError("Your card was declined.", None, "card_declined", json_body=body, http_status=402)


@pytest.mark.parametrize(
    ("error", "charge", "refund"),
    [
        (card_error(), ChargeStatus.DECLINED, RefundStatus.FAILED),
        (stripe.RateLimitError("slow down", http_status=429), ChargeStatus.RETRYABLE, RefundStatus.RETRYABLE),
        (stripe.APIConnectionError("reset"), ChargeStatus.UNKNOWN, RefundStatus.UNKNOWN),
        (TimeoutError(), ChargeStatus.UNKNOWN, RefundStatus.UNKNOWN),
        (stripe.APIError("boom", http_status=500), ChargeStatus.UNKNOWN, RefundStatus.UNKNOWN),
        (stripe.APIError("conflict", http_status=409), ChargeStatus.UNKNOWN, RefundStatus.UNKNOWN),
        (stripe.IdempotencyError("reused", http_status=400), ChargeStatus.UNKNOWN, RefundStatus.UNKNOWN),
        (stripe.InvalidRequestError("bad", "amount", http_status=400), ChargeStatus.FAILED, RefundStatus.FAILED),
        (stripe.AuthenticationError("bad key", http_status=401), ChargeStatus.FAILED, RefundStatus.FAILED),
        (stripe.PermissionError("no", http_status=403), ChargeStatus.FAILED, RefundStatus.FAILED),
    ],
    ids=["card", "rate-limit", "connection", "timeout", "500", "409", "idempotency", "invalid", "auth", "permission"],
)
def test_error_classes(error: Exception, charge: ChargeStatus, refund: RefundStatus):
    assert transformers.charge_result_from_error(error).status is charge
    assert transformers.refund_result_from_error(error).status is refund


def test_card_error_keeps_decline_code_and_payment_intent():
    result = transformers.charge_result_from_error(card_error())

    assert (result.decline_code, result.processor_reference) == ("do_not_honor", "pi_9")


@pytest.mark.parametrize(
    ("transaction", "expected"),
    [
        ({"type": "charge", "reporting_category": "charge"}, BalanceTransactionType.CHARGE),
        ({"type": "payment", "reporting_category": "charge"}, BalanceTransactionType.CHARGE),
        ({"type": "refund", "reporting_category": "refund"}, BalanceTransactionType.REFUND),
        ({"type": "adjustment", "reporting_category": "dispute", "source": "dp_1"}, BalanceTransactionType.DISPUTE),
        ({"type": "adjustment", "source": "dp_1"}, BalanceTransactionType.DISPUTE),
        ({"type": "payout", "reporting_category": "payout"}, BalanceTransactionType.PAYOUT),
        ({"type": "stripe_fee", "reporting_category": "fee"}, BalanceTransactionType.FEE),
        ({"type": "topup", "reporting_category": "topup"}, BalanceTransactionType.OTHER),
    ],
)
def test_balance_transaction_types(transaction: dict[str, str], expected: BalanceTransactionType):
    assert transformers.balance_transaction_type(transaction) is expected


def test_balance_transaction_amounts_are_signed_and_sources_named():
    payout = {"id": "txn_p", "type": "payout", "amount": -90_000, "fee": 0, "currency": "jpy", "created": 1_790_000_000,
              "source": {"id": "po_1", "object": "payout"}}  # fmt: skip

    mapped = transformers.balance_transaction_from_stripe(payout, None)

    assert (mapped.amount, mapped.fee, mapped.source_reference) == (Money(-90_000, "JPY"), Money(0, "JPY"), "po_1")


def test_idempotency_keys_are_namespaced_and_bounded():
    assert stripe_idempotency_key("charge", "abc") == "surge-charge-abc"
    assert stripe_idempotency_key("refund", "abc") != stripe_idempotency_key("charge", "abc")
    long_key = stripe_idempotency_key("charge", "k" * 300)
    assert len(long_key) <= 255 and long_key == stripe_idempotency_key("charge", "k" * 300)
