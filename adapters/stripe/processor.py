"""The Stripe :class:`~adapters.base.Processor`: PaymentIntents created and confirmed in one call, refunds, lookup
by PaymentIntent id or by the idempotency key kept in metadata, verified webhooks and balance transactions.

Every call returns an outcome; no ``stripe`` exception escapes ``charge``, ``refund`` or ``lookup``. Retries are
the SDK's own (``max_network_retries``), which resend the same idempotency key, so Stripe processes a request at
most once; anything the adapter cannot prove either way is ``UNKNOWN`` and left to ``lookup``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import aiohttp
import stripe

from adapters.base import (
    AUTHENTICATION_REQUIRED,
    BalanceTransaction,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    ProcessorEvent,
    RefundRequest,
    RefundResult,
    RefundStatus,
    SavedMethodDetails,
    SaveResult,
    SaveStatus,
    parse_off_session_token,
)
from adapters.stripe import transformers, webhooks
from adapters.stripe.client import StripeConnection
from adapters.stripe.config import StripeConfig
from ledger.money import Money

logger = logging.getLogger(__name__)

# Server-side confirmation without a return_url: Stripe wants automatic payment methods that never redirect.
# localstripe refuses that parameter ("Unexpected automatic_payment_methods") but takes the older card-only form,
# which the SDK's API version no longer types; the adapter switches once, at the first such refusal.
NO_REDIRECT_PARAMETERS: dict[str, Any] = {"automatic_payment_methods": {"enabled": True, "allow_redirects": "never"}}
LEGACY_CARD_PARAMETERS: dict[str, Any] = {"payment_method_types": ["card"]}
FEE_EXPANSION = "latest_charge.balance_transaction"
# The fee, and the card for the donor's receipt (expanded for localstripe, whose charges carry no card details).
CHARGE_EXPANSIONS = [FEE_EXPANSION, "payment_method"]
PAGE_SIZE = 100
IDEMPOTENCY_KEY_LENGTH_MAX = 255  # Stripe's limit
# Transport failures the SDK does not always wrap: aiohttp reads the body outside the SDK's try block.
TRANSPORT_ERRORS = (stripe.StripeError, TimeoutError, aiohttp.ClientError)


class StripeRequestError(RuntimeError):
    """A read for reconciliation failed (balance transactions); the cause is chained. Try again later."""


class StripeProcessor:
    def __init__(self, config: StripeConfig, name: str = "stripe") -> None:
        self.name = name
        self.config = config
        self._connection = StripeConnection(config)
        self._v1 = self._connection.client.v1
        # Capabilities the real API has and localstripe lacks, learnt at the first refusal.
        self._search_supported = True
        self._payment_method_parameters = NO_REDIRECT_PARAMETERS
        self._created_filter_supported = {"payment_intents": True, "balance_transactions": True}

    # --- charge ----------------------------------------------------------------------------------------------------

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        try:
            amount, currency = transformers.to_stripe_amount(request.amount)
        except transformers.UnrepresentableAmountError as error:
            return ChargeResult(ChargeStatus.FAILED, message=f"amount cannot be sent to Stripe: {error}")
        if not await self._connection.admit():
            return ChargeResult(ChargeStatus.RETRYABLE, message="Stripe rate limit reached locally; nothing was sent")
        metadata = {
            **request.metadata,
            "donation_id": request.donation_id,
            "campaign": request.campaign,
            "idempotency_key": request.idempotency_key,  # lookup finds the charge by this after a crash
        }
        saved = parse_off_session_token(request.payment_method)
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "payment_method": saved[1] if saved else request.payment_method,
            "confirm": True,
            "metadata": metadata,
            "expand": CHARGE_EXPANSIONS,
        }
        if saved is not None:  # a saved method charged without the donor: the customer's, off-session
            params.update(customer=saved[0], off_session=True)
        try:
            intent = await self._create_payment_intent(
                params, stripe_idempotency_key("charge", request.idempotency_key)
            )
        except TRANSPORT_ERRORS as error:
            result = transformers.charge_result_from_error(error)
            logger.info("stripe charge %s: %s (%s)", request.donation_id, result.status, result.message)
            return result
        data = intent.to_dict()
        if saved is not None and data.get("status") == "requires_action":
            return await self._decline_off_session_authentication(data)
        return await self._charge_result(data)

    async def _decline_off_session_authentication(self, intent: Mapping[str, Any]) -> ChargeResult:
        """Stripe answers an off-session charge that needs 3-D Secure with a ``authentication_required`` card error;
        localstripe leaves the PaymentIntent in ``requires_action`` instead. No donor is there to authenticate, so
        the intent is cancelled (it can never be charged) and the outcome is that decline either way."""
        reference = _text(intent.get("id"))
        if reference is not None and await self._connection.admit():
            try:
                await self._v1.payment_intents.cancel_async(reference)
            except TRANSPORT_ERRORS as error:
                # Still requires_action: nobody can authenticate it off-session, so it will not be charged.
                logger.info("cancelling %s after requires_action failed: %r", reference, error)
        message = "This payment requires the donor's authentication; confirm it on the page."
        return ChargeResult(ChargeStatus.DECLINED, reference, decline_code=AUTHENTICATION_REQUIRED, message=message)

    # --- saved methods (adapters.base.SavesPaymentMethods) -------------------------------------------------------

    async def save_payment_method(self, payment_method: str, email: str, name: str) -> SaveResult:
        """A Customer for the donor with the PaymentMethod attached, for off-session charges later. Attaching
        (rather than ``setup_future_usage`` on the first PaymentIntent, which localstripe does not take) works the
        same on Stripe and localstripe and leaves the first gift an ordinary charge of the saved method."""
        if not await self._connection.admit():
            return SaveResult(SaveStatus.UNKNOWN, message="Stripe rate limit reached locally; nothing was sent")
        try:
            customer = await self._v1.customers.create_async({"email": email, "name": name})
            await self._admit_or_raise()
            method = await self._v1.payment_methods.attach_async(payment_method, {"customer": customer.id})
        except TRANSPORT_ERRORS as error:
            classified = transformers.classify_error(error)
            status = {
                transformers.ErrorKind.DECLINED: SaveStatus.DECLINED,
                transformers.ErrorKind.FAILED: SaveStatus.FAILED,
            }.get(classified.kind, SaveStatus.UNKNOWN)
            return SaveResult(status, decline_code=classified.code, message=classified.message)
        return SaveResult(SaveStatus.SAVED, _saved_details(customer.id, method.to_dict()))

    async def detach_payment_method(self, method: SavedMethodDetails) -> bool:
        try:
            await self._admit_or_raise()
            await self._v1.payment_methods.detach_async(method.payment_method_reference)
        except TRANSPORT_ERRORS as error:
            logger.info("detaching %s failed: %r", method.payment_method_reference, error)
            return False
        return True

    async def refresh_payment_method(self, method: SavedMethodDetails) -> SavedMethodDetails | None:
        """The card as Stripe has it now: its card updater changes expiry and number in place."""
        try:
            await self._admit_or_raise()
            data = await self._v1.payment_methods.retrieve_async(method.payment_method_reference)
        except TRANSPORT_ERRORS as error:
            logger.info("reading %s failed: %r", method.payment_method_reference, error)
            return None
        return _saved_details(method.customer_reference, data.to_dict())

    async def _create_payment_intent(self, params: dict[str, Any], idempotency_key: str) -> stripe.PaymentIntent:
        body: Any = {**params, **self._payment_method_parameters}
        options: Any = {"idempotency_key": idempotency_key}
        try:
            return await self._v1.payment_intents.create_async(body, options)
        except stripe.InvalidRequestError as error:
            if not self._refuses_no_redirect_parameters(error):
                raise
        # A refused parameter fails validation, which Stripe never processes or records: resending is safe.
        self._payment_method_parameters = LEGACY_CARD_PARAMETERS
        body = {**params, **LEGACY_CARD_PARAMETERS}
        return await self._v1.payment_intents.create_async(body, options)

    def _refuses_no_redirect_parameters(self, error: stripe.InvalidRequestError) -> bool:
        message = error.user_message or ""
        return (
            self._payment_method_parameters is NO_REDIRECT_PARAMETERS
            and "automatic_payment_methods" in message
            and (error.param == "automatic_payment_methods" or message.startswith("Unexpected"))
        )

    async def _charge_result(self, intent: Mapping[str, Any]) -> ChargeResult:
        try:
            result = transformers.charge_result_from_payment_intent(intent)
        except (KeyError, TypeError, ValueError):
            logger.exception("unreadable PaymentIntent %s", intent.get("id"))
            return ChargeResult(
                ChargeStatus.UNKNOWN, _text(intent.get("id")), message="Stripe's answer could not be read"
            )
        if result.status is ChargeStatus.SUCCEEDED and result.fee is None:
            fee = await self._fetch_fee(intent)
            if fee is not None:
                return dataclasses.replace(result, fee=fee)
        return result

    async def _fetch_fee(self, intent: Mapping[str, Any]) -> Money | None:
        """The fee when the response named the balance transaction without expanding it; None when unknown."""
        transaction_id = transformers.unexpanded_balance_transaction(intent)
        if transaction_id is None or not await self._connection.admit():
            return None
        try:
            transaction = await self._v1.balance_transactions.retrieve_async(transaction_id)
            return transformers.balance_transaction_fee(transaction.to_dict())
        except (*TRANSPORT_ERRORS, KeyError, TypeError, ValueError) as error:
            logger.info("fee of %s unknown: %r", intent.get("id"), error)
            return None

    # --- refund ----------------------------------------------------------------------------------------------------

    async def refund(self, request: RefundRequest) -> RefundResult:
        try:
            amount, _ = transformers.to_stripe_amount(request.amount)
        except transformers.UnrepresentableAmountError as error:
            return RefundResult(RefundStatus.FAILED, message=f"amount cannot be sent to Stripe: {error}")
        if not await self._connection.admit():
            return RefundResult(RefundStatus.RETRYABLE, message="Stripe rate limit reached locally; nothing was sent")
        params: Any = {
            _refund_target(request.processor_reference): request.processor_reference,
            "amount": amount,
            "metadata": transformers.refund_metadata(request),
        }
        try:
            refund = await self._v1.refunds.create_async(
                params=params,
                options={"idempotency_key": stripe_idempotency_key("refund", request.idempotency_key)},
            )
            return transformers.refund_result_from_refund(refund.to_dict())
        except TRANSPORT_ERRORS as error:
            result = transformers.refund_result_from_error(error)
            logger.info("stripe refund %s: %s (%s)", request.refund_id, result.status, result.message)
            return result

    async def lookup_refund(self, request: RefundRequest, refund_reference: str | None) -> RefundResult:
        """The refund by its id when known, else among the charge's refunds the one whose metadata names this
        Surge refund (or its idempotency key); NOT_FOUND only when the whole list was read and it is not there."""
        try:
            if refund_reference:
                await self._admit_or_raise()
                try:
                    refund = await self._v1.refunds.retrieve_async(refund_reference)
                    return transformers.refund_result_from_refund(refund.to_dict())
                except stripe.InvalidRequestError as error:
                    if error.http_status != 404:
                        raise
            async for refund_data in self._charge_refunds(request.processor_reference):
                if transformers.refund_matches(refund_data, request):
                    return transformers.refund_result_from_refund(refund_data)
            return RefundResult(RefundStatus.NOT_FOUND, message="Stripe has no refund for this key")
        except (*TRANSPORT_ERRORS, KeyError, TypeError, ValueError) as error:
            # Whatever failed, the refund's fate is still unknown: never NOT_FOUND on an error.
            return RefundResult(RefundStatus.UNKNOWN, refund_reference, message=f"refund lookup failed: {error!r}")

    async def _charge_refunds(self, charge_reference: str) -> AsyncIterator[Mapping[str, Any]]:
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {_refund_target(charge_reference): charge_reference, "limit": PAGE_SIZE}
            if starting_after:
                params["starting_after"] = starting_after
            await self._admit_or_raise()
            page = await self._v1.refunds.list_async(params=params)  # type: ignore[arg-type]
            for item in page.data:
                yield item.to_dict()
            if not page.has_more or not page.data:
                return
            starting_after = page.data[-1].id

    # --- lookup ----------------------------------------------------------------------------------------------------

    async def lookup(self, idempotency_key: str, processor_reference: str | None) -> ChargeResult:
        try:
            if processor_reference:
                result = await self._retrieve(processor_reference)
                if result is not None:
                    return result
            return await self._lookup_by_key(idempotency_key)
        except TRANSPORT_ERRORS as error:
            # Whatever failed, the charge's fate is still unknown: never NOT_FOUND on an error.
            classified = transformers.classify_error(error)
            return ChargeResult(
                ChargeStatus.UNKNOWN, processor_reference, message=f"lookup failed: {classified.message}"
            )

    async def _retrieve(self, reference: str) -> ChargeResult | None:
        """The PaymentIntent's outcome, or None when Stripe has no such PaymentIntent."""
        await self._admit_or_raise()
        try:
            intent = await self._v1.payment_intents.retrieve_async(reference, params={"expand": CHARGE_EXPANSIONS})
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return None
            raise
        return await self._charge_result(intent.to_dict())

    async def _lookup_by_key(self, idempotency_key: str) -> ChargeResult:
        matches = await self._search(idempotency_key)
        if not matches:
            # Search lags writes (normally under a minute, up to an hour in outages): list recent ones too.
            matches, complete = await self._scan_recent(idempotency_key)
            if not matches and not complete:
                return ChargeResult(
                    ChargeStatus.UNKNOWN,
                    message=f"no PaymentIntent found for the key among the {self.config.lookup_scan_max} listed; "
                    "older ones were not examined: try again later",
                )
        chosen = transformers.most_advanced(matches)
        if chosen is None:
            return ChargeResult(ChargeStatus.NOT_FOUND, message="Stripe has no PaymentIntent for this key")
        if len(matches) > 1:
            logger.warning("%d PaymentIntents carry idempotency key %s", len(matches), idempotency_key)
        result = await self._retrieve(str(chosen["id"]))
        return result if result is not None else await self._charge_result(chosen)

    async def _search(self, idempotency_key: str) -> list[Mapping[str, Any]]:
        if not self._search_supported:
            return []
        if not await self._connection.admit_search():
            raise stripe.RateLimitError("Stripe search rate limit reached locally")
        escaped = idempotency_key.replace("\\", "\\\\").replace("'", "\\'")
        try:
            found = await self._v1.payment_intents.search_async(
                params={"query": f"metadata['idempotency_key']:'{escaped}'", "limit": 10}
            )
        except stripe.InvalidRequestError as error:
            # localstripe has no search (404); Stripe has none for accounts in India. Listing still works.
            logger.info("Stripe search unavailable (%s); lookups list recent PaymentIntents", error.user_message)
            self._search_supported = False
            return []
        return [intent.to_dict() for intent in found.data]

    async def _scan_recent(self, idempotency_key: str) -> tuple[list[Mapping[str, Any]], bool]:
        """PaymentIntents of the last ``lookup_window_s`` carrying the key, and whether the scan saw them all."""
        created_from = int(time.time()) - self.config.lookup_window_s
        matches: list[Mapping[str, Any]] = []
        scanned = 0
        async for intent in self._list("payment_intents", created_from, None):
            scanned += 1
            if scanned > self.config.lookup_scan_max:
                return matches, False
            metadata = intent.get("metadata") or {}
            if metadata.get("idempotency_key") == idempotency_key:
                matches.append(intent)
        return matches, True

    # --- webhooks --------------------------------------------------------------------------------------------------

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> ProcessorEvent:
        return webhooks.parse(payload, headers, self.config.webhook_secret, self.config.webhook_tolerance_s)

    # --- balance transactions ------------------------------------------------------------------------------------

    async def balance_transactions(self, created_from: datetime, created_to: datetime) -> list[BalanceTransaction]:
        """Every balance transaction created in ``[created_from, created_to]`` (whole seconds, both inclusive)."""
        if created_from.tzinfo is None or created_to.tzinfo is None:
            raise ValueError("balance_transactions needs time-zone-aware datetimes")
        start, end = int(created_from.timestamp()), int(created_to.timestamp())
        try:
            transactions = [t async for t in self._list("balance_transactions", start, end, expand=["data.source"])]
            donation_ids = await self._donation_ids(transactions)
            return [
                transformers.balance_transaction_from_stripe(t, donation_ids.get(str(t["id"]))) for t in transactions
            ]
        except (*TRANSPORT_ERRORS, KeyError, TypeError, ValueError) as error:
            raise StripeRequestError(f"listing Stripe balance transactions failed: {error!r}") from error

    async def _donation_ids(self, transactions: list[Mapping[str, Any]]) -> dict[str, str]:
        """Donation ids by balance transaction: from the source's metadata, else from its PaymentIntent's."""
        found: dict[str, str] = {}
        wanted: dict[str, list[str]] = {}
        for transaction in transactions:
            donation_id = transformers.source_donation_id(transaction)
            intent_id = transformers.source_payment_intent(transaction)
            if donation_id is not None:
                found[str(transaction["id"])] = donation_id
            elif intent_id is not None:
                wanted.setdefault(intent_id, []).append(str(transaction["id"]))
        for intent_id, transaction_ids in wanted.items():
            await self._admit_or_raise()
            intent = await self._v1.payment_intents.retrieve_async(intent_id)
            donation_id = transformers.donation_id_of(intent.to_dict())
            if donation_id is not None:
                found.update(dict.fromkeys(transaction_ids, donation_id))
        return found

    # --- listing ---------------------------------------------------------------------------------------------------

    async def _list(
        self, resource: str, created_from: int, created_to: int | None, expand: list[str] | None = None
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Objects created in ``[created_from, created_to]``, paged by hand so each page passes the rate limiter.

        Stripe filters by ``created`` on the server; localstripe refuses the filter, so the first refusal switches
        to filtering here (localstripe lists balance transactions newest first, PaymentIntents oldest first)."""
        service = getattr(self._v1, resource)
        created: dict[str, int] = {"gte": created_from}
        if created_to is not None:
            created["lte"] = created_to
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            if self._created_filter_supported[resource]:
                params["created"] = created
            if expand:
                params["expand"] = expand
            if starting_after:
                params["starting_after"] = starting_after
            await self._admit_or_raise()
            try:
                page = await service.list_async(params=params)
            except stripe.InvalidRequestError:
                if starting_after is not None or not self._created_filter_supported[resource]:
                    raise
                logger.info("Stripe at %s refuses created filters on %s", self.config.api_base, resource)
                self._created_filter_supported[resource] = False
                continue
            for item in page.data:
                data = item.to_dict()
                stamp = data.get("created", 0)
                if stamp >= created_from and (created_to is None or stamp <= created_to):
                    yield data
            if not page.has_more or not page.data:
                return
            starting_after = page.data[-1].id

    async def _admit_or_raise(self) -> None:
        if not await self._connection.admit():
            raise stripe.RateLimitError("Stripe rate limit reached locally; nothing was sent")

    async def close(self) -> None:
        await self._connection.close()


def stripe_idempotency_key(purpose: str, key: str) -> str:
    """The Idempotency-Key sent to Stripe: the engine's key, namespaced by purpose so a charge and a refund never
    share one, and hashed when it would exceed Stripe's 255 characters."""
    candidate = f"surge-{purpose}-{key}"
    if len(candidate) <= IDEMPOTENCY_KEY_LENGTH_MAX:
        return candidate
    return f"surge-{purpose}-sha256-{hashlib.sha256(key.encode()).hexdigest()}"


def _refund_target(charge_reference: str) -> str:
    return "charge" if charge_reference.startswith("ch_") else "payment_intent"


def _saved_details(customer: str, method: Mapping[str, Any]) -> SavedMethodDetails:
    card = method.get("card") or {}
    exp_month, exp_year = card.get("exp_month"), card.get("exp_year")
    return SavedMethodDetails(
        customer_reference=customer,
        payment_method_reference=str(method["id"]),
        brand=_text(card.get("brand")),
        last4=_text(card.get("last4")),
        exp_month=exp_month if isinstance(exp_month, int) else None,
        exp_year=exp_year if isinstance(exp_year, int) else None,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
