"""The simulated payment processor: the default processor, the load-test target, and the processor-side truth.

It behaves like a real processor where it matters to money: a charge is on record (in PostgreSQL, schema
``simulator``) before the answer leaves, so a charge that succeeded exists even if the engine dies right after;
idempotency keys make a replay return the first answer; a timeout may come after the charge happened
(``pm_sim_timeout_charged``) or before (``pm_sim_timeout_lost``), and only :meth:`lookup` can tell which.

Writes go through group committers, so thousands of charges per second cost tens of transactions. The record is
shared by every engine process on the database; the rate cap and the random source are per instance.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType

import asyncpg

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
from adapters.simulated import store, webhooks
from adapters.simulated.config import SimulatedConfig
from adapters.simulated.faults import LatencyModel, outage_end_epoch_s
from adapters.simulated.fees import processing_fee_minor
from adapters.simulated.memory_record import MemoryChargeRecord, refuse
from adapters.simulated.record import (
    ChargeRecordStatus,
    RecordedCharge,
    RecordedRefund,
    SignedWebhook,
    SimulatorError,
)
from adapters.simulated.tokens import ChargePlan, PlanKind, card_details, plan_charge
from ledger.batcher import BatcherFullError, BatcherLimits, BatchObserver, GroupCommitter
from ledger.money import Money
from toolkit.token_bucket import TokenBucket

DISPUTE_FEE_MINOR = 1500  # Stripe's US dispute fee
EXPIRED_CARD = "pm_card_chargeDeclinedExpiredCard"  # saved, it is "renewed" by refresh_payment_method
# The database failed mid-write: the record may or may not have changed, as after a processor's HTTP 500.
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class SimulatedProcessor:
    def __init__(
        self,
        pool: asyncpg.Pool,
        config: SimulatedConfig | None = None,
        name: str = "simulated",
        *,
        limits: BatcherLimits | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name  # also the account in the record: instances with one name share keys and balance
        self.config = config or SimulatedConfig()
        self._pool = pool
        self._rng = random.Random(self.config.seed)
        self._latency = LatencyModel(self.config.latency_ms_median, self.config.latency_ms_p99)
        self._started_epoch_s = time.time()
        self._bucket = self._token_bucket()
        limits = limits or BatcherLimits()
        self._charge_writer = GroupCommitter(
            pool, self._write_charges, limits, name=f"{name}-charges", observer=observer
        )
        self._refund_writer = GroupCommitter(
            pool, self._write_refunds, limits, name=f"{name}-refunds", observer=observer
        )
        self._started = False
        # Charges of this process on their way to the record: a lookup waits for them, so that it never answers
        # NOT_FOUND for a charge whose write is about to commit (Stripe answers 409 in that window).
        self._in_flight: dict[str, asyncio.Task[store.ChargeWritten]] = {}
        self._memory = MemoryChargeRecord() if self.config.record == "memory" else None

    def _token_bucket(self) -> TokenBucket | None:
        rate = self.config.charges_per_s_max
        if rate is None:
            return None
        burst = self.config.charges_burst_max or max(1, math.ceil(rate))
        return TokenBucket(rate, burst)

    async def _write_charges(
        self, connection: asyncpg.Connection, writes: Sequence[store.ChargeWrite]
    ) -> list[store.ChargeWritten]:
        return await store.write_charges(connection, self.name, writes)

    async def _write_refunds(
        self, connection: asyncpg.Connection, writes: Sequence[store.RefundWrite]
    ) -> list[RefundResult]:
        return await store.write_refunds(connection, self.name, writes)

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the record's committers (also done by the first charge or refund)."""
        if not self._started:
            self._started = True
            self._charge_writer.start()
            self._refund_writer.start()

    async def close(self) -> None:
        """Commit what is queued and stop. Calls hanging in a simulated timeout are the callers' to cancel."""
        if self._started:
            await self._charge_writer.stop()
            await self._refund_writer.stop()

    async def __aenter__(self) -> SimulatedProcessor:
        self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    # ---- the Processor interface -------------------------------------------------------------------------------

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        refused = self._refusal(rate_limited=True)
        if refused is not None:
            return ChargeResult(ChargeStatus.RETRYABLE, message=refused)
        await self._pause()
        plan = _off_session_plan(request.payment_method, request.amount.amount_minor, self.config, self._rng)
        if plan.kind is PlanKind.INVALID:
            return ChargeResult(ChargeStatus.FAILED, decline_code=plan.decline_code, message=plan.message)
        if plan.kind is PlanKind.LOSE:
            return await self._hang()
        if plan.status is None:
            raise RuntimeError(f"charge plan {plan} records no status")
        fee_minor = self._fee_minor(request.amount) if plan.status is ChargeRecordStatus.SUCCEEDED else 0
        write = store.ChargeWrite(store.new_id("pi"), request, plan.status, fee_minor, plan.decline_code, plan.message)
        try:
            written = await self._record_charge(write)
        except BatcherFullError:
            return ChargeResult(ChargeStatus.RETRYABLE, message="simulator overloaded: its write queue is full")
        except _DATABASE_ERRORS as error:
            return ChargeResult(ChargeStatus.UNKNOWN, message=f"simulator record failed: {type(error).__name__}")
        if not written.created:
            return _replay_result(written.charge, request)
        if plan.hang:
            return await self._hang()
        return _charge_result(written.charge)

    # ---- saved methods (adapters.base.SavesPaymentMethods) -------------------------------------------------------
    # The simulator keeps no customers: a customer is a fresh id and the saved method is the test token itself (the
    # "card"), so an off-session charge behaves as that card does, as Stripe's test cards do when saved.

    async def save_payment_method(self, payment_method: str, email: str, name: str) -> SaveResult:
        # Any card the simulator knows attaches (Stripe refuses some declining test cards already here): its
        # declines come at charge time, so dunning can be exercised with every decline code.
        details = card_details(payment_method)
        if details is None:
            return SaveResult(SaveStatus.FAILED, message=f"No such PaymentMethod: '{payment_method}'")
        brand, last4 = details
        method = SavedMethodDetails(store.new_id("cus"), payment_method, brand, last4, 12, 2034)
        return SaveResult(SaveStatus.SAVED, method)

    async def detach_payment_method(self, method: SavedMethodDetails) -> bool:
        return True

    async def refresh_payment_method(self, method: SavedMethodDetails) -> SavedMethodDetails | None:
        """As a card updater does: the expired test card comes back renewed (a Visa with a later expiry)."""
        if method.payment_method_reference == EXPIRED_CARD:
            return SavedMethodDetails(method.customer_reference, "pm_card_visa", "visa", "4242", 12, 2036)
        return method

    async def refund(self, request: RefundRequest) -> RefundResult:
        refused = self._refusal(rate_limited=False)
        if refused is not None:
            return RefundResult(RefundStatus.RETRYABLE, message=refused)
        if self._memory is not None:
            return RefundResult(RefundStatus.FAILED, message=str(refuse("refunds")))
        await self._pause()
        self.start()
        write = store.RefundWrite(store.new_id("re"), store.new_id("evt"), request)
        try:
            return await self._refund_writer.submit_nowait(write)
        except BatcherFullError:
            return RefundResult(RefundStatus.RETRYABLE, message="simulator overloaded: its write queue is full")
        except _DATABASE_ERRORS as error:
            return RefundResult(RefundStatus.UNKNOWN, message=f"simulator record failed: {type(error).__name__}")

    async def lookup_refund(self, request: RefundRequest, refund_reference: str | None) -> RefundResult:
        """The refund recorded for the request's key (or ``refund_reference``); simulated refunds succeed when
        recorded, so the answer is SUCCEEDED or NOT_FOUND (UNKNOWN while the record cannot be read)."""
        if self._outage_end_epoch_s() is not None:
            return RefundResult(RefundStatus.UNKNOWN, message="simulated outage: service unavailable")
        if self._memory is not None:
            return RefundResult(RefundStatus.NOT_FOUND)
        await self._pause()
        try:
            async with self._pool.acquire() as connection:
                found = await store.refund_for(connection, self.name, request.idempotency_key, refund_reference)
        except _DATABASE_ERRORS as error:
            return RefundResult(RefundStatus.UNKNOWN, message=f"simulator record failed: {type(error).__name__}")
        if found is None:
            return RefundResult(RefundStatus.NOT_FOUND)
        if found.charge_reference != request.processor_reference or found.amount != request.amount:
            message = store.IDEMPOTENCY_MISMATCH_MESSAGE.format(key=request.idempotency_key)
            return RefundResult(RefundStatus.FAILED, message=message)
        return RefundResult(RefundStatus.SUCCEEDED, found.reference)

    async def lookup(self, idempotency_key: str, processor_reference: str | None) -> ChargeResult:
        if self._outage_end_epoch_s() is not None:
            # Unavailable is not "not found": the caller must ask again, not conclude the charge never happened.
            return ChargeResult(ChargeStatus.UNKNOWN, message="simulated outage: service unavailable")
        await self._pause()
        in_flight = self._in_flight.get(idempotency_key)
        if in_flight is not None:
            await asyncio.wait({in_flight})  # wait for the write, never cancel it
        if self._memory is not None:
            charge = self._memory.find(idempotency_key, processor_reference)
            return _charge_result(charge) if charge is not None else ChargeResult(ChargeStatus.NOT_FOUND)
        try:
            async with self._pool.acquire() as connection:
                found = await store.charges_by_keys(connection, self.name, [idempotency_key])
                charge = found[0] if found else None
                if charge is None and processor_reference is not None:
                    charge = await store.charge_by_reference(connection, self.name, processor_reference)
        except _DATABASE_ERRORS as error:
            return ChargeResult(ChargeStatus.UNKNOWN, message=f"simulator record failed: {type(error).__name__}")
        if charge is None:
            return ChargeResult(ChargeStatus.NOT_FOUND)
        return _charge_result(charge)

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> ProcessorEvent:
        secret, tolerance_s = self.config.webhook_secret, self.config.webhook_tolerance_s
        webhooks.verify_signature(payload, headers, secret, tolerance_s, time.time())
        return webhooks.parse_event(payload)

    async def balance_transactions(self, created_from: datetime, created_to: datetime) -> list[BalanceTransaction]:
        self._database_record("balance transactions")
        async with self._pool.acquire() as connection:
            return await store.balance_transactions(connection, self.name, created_from, created_to)

    # ---- helpers for tests and audits --------------------------------------------------------------------------

    async def charges(self) -> list[RecordedCharge]:
        """Every charge on record (succeeded, declined or waiting for authentication), oldest first."""
        if self._memory is not None:
            return self._memory.charges()
        async with self._pool.acquire() as connection:
            return await store.all_charges(connection, self.name)

    async def refunds(self) -> list[RecordedRefund]:
        self._database_record("refunds")
        async with self._pool.acquire() as connection:
            return await store.all_refunds(connection, self.name)

    async def create_dispute(
        self, processor_reference: str, amount: Money | None = None, fee_minor: int = DISPUTE_FEE_MINOR
    ) -> SignedWebhook:
        """Open a dispute (default: the whole unrefunded amount); its webhook's ``object_id`` is the dispute id."""
        self._database_record("disputes")
        async with self._pool.acquire() as connection, connection.transaction():
            event = await store.create_dispute(connection, self.name, processor_reference, amount, fee_minor)
        return self._signed(event)

    async def close_dispute(self, dispute_id: str, won: bool) -> SignedWebhook:
        self._database_record("disputes")
        async with self._pool.acquire() as connection, connection.transaction():
            event = await store.close_dispute(connection, self.name, dispute_id, won)
        return self._signed(event)

    async def pay_out(self, currency: str = "USD") -> SignedWebhook | None:
        """Pay out the available balance in ``currency``; None when it is not positive."""
        self._database_record("payouts")
        async with self._pool.acquire() as connection, connection.transaction():
            event = await store.pay_out(connection, self.name, currency)
        return None if event is None else self._signed(event)

    async def resolve_pending(self, processor_reference: str, succeeded: bool) -> SignedWebhook:
        """The donor completed (or abandoned) the authentication a PENDING charge waits for."""
        self._database_record("authentications")
        async with self._pool.acquire() as connection, connection.transaction():
            event = await store.resolve_pending(connection, self.name, processor_reference, succeeded, self._fee_minor)
        return self._signed(event)

    async def webhooks(self, since: datetime | None = None) -> list[SignedWebhook]:
        """Every event sent (refunds, disputes, payouts, settled authentications), signed now, oldest first."""
        self._database_record("events")
        async with self._pool.acquire() as connection:
            events = await store.stored_events(connection, self.name, since)
        return [self._signed(event) for event in events]

    async def webhook(self, event_id: str) -> SignedWebhook:
        """One recorded event signed again now: a redelivery, as processors retry webhooks."""
        self._database_record("events")
        async with self._pool.acquire() as connection:
            event = await store.stored_event(connection, self.name, event_id)
        if event is None:
            raise SimulatorError(f"no event {event_id!r} on account {self.name!r}")
        return self._signed(event)

    def signed_headers(self, payload: bytes, timestamp_s: int | None = None) -> dict[str, str]:
        """Headers that sign ``payload`` with this processor's secret (``timestamp_s`` to make stale ones)."""
        timestamp_s = int(time.time()) if timestamp_s is None else timestamp_s
        return webhooks.signed_headers(payload, self.config.webhook_secret, timestamp_s)

    # ---- internals ---------------------------------------------------------------------------------------------

    def _database_record(self, what: str) -> None:
        if self._memory is not None:
            raise refuse(what)

    def _signed(self, event: store.StoredEvent) -> SignedWebhook:
        headers = self.signed_headers(event.payload)
        return SignedWebhook(event.id, event.type, event.object_id, event.payload, headers)

    def _fee_minor(self, amount: Money) -> int:
        return processing_fee_minor(amount.amount_minor, self.config.fee_rate_bp, self.config.fee_fixed_minor)

    def _outage_end_epoch_s(self) -> float | None:
        return outage_end_epoch_s(self.config.outages, self._started_epoch_s, time.time())

    def _refusal(self, *, rate_limited: bool) -> str | None:
        """Why the request is turned away before the processor accepts it (HTTP 503 or 429), or None."""
        outage_end_s = self._outage_end_epoch_s()
        if outage_end_s is not None:
            until = datetime.fromtimestamp(outage_end_s, UTC).isoformat()
            return f"simulated outage: service unavailable until {until}"
        if rate_limited and self._bucket is not None and not self._bucket.try_take():
            return "rate limited: too many requests, retry later with the same idempotency key"
        return None

    async def _pause(self) -> None:
        latency_ms = self._latency.sample_ms(self._rng)
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)

    async def _hang(self) -> ChargeResult:
        await asyncio.sleep(self.config.hang_s)
        return ChargeResult(ChargeStatus.UNKNOWN, message=f"simulated timeout: no answer for {self.config.hang_s} s")

    async def _record_charge(self, write: store.ChargeWrite) -> store.ChargeWritten:
        if self._memory is not None:
            return self._memory.write(write)
        self.start()
        key = write.request.idempotency_key
        # A task of its own, shielded: a caller that gives up (its timeout) must not cancel the write, which then
        # lands or not exactly as it would at a real processor; lookups wait for it.
        task = asyncio.ensure_future(self._charge_writer.submit_nowait(write))
        self._in_flight[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[store.ChargeWritten]) -> None:
        if self._in_flight.get(key) is task:
            del self._in_flight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a caller that gave up leaves no "never retrieved" warning


def _off_session_plan(
    payment_method: str, amount_minor: int, config: SimulatedConfig, rng: random.Random
) -> ChargePlan:
    """The plan for a charge; a saved card charged off-session that wants authentication is declined, as Stripe
    does (``authentication_required``), since no donor is there to authenticate."""
    saved = parse_off_session_token(payment_method)
    plan = plan_charge(saved[1] if saved else payment_method, amount_minor, config, rng)
    if saved is not None and plan.status is ChargeRecordStatus.REQUIRES_ACTION:
        message = "This payment requires the donor's authentication; confirm it on the page."
        return ChargePlan(PlanKind.RECORD, ChargeRecordStatus.DECLINED, AUTHENTICATION_REQUIRED, message)
    return plan


def _card_of(payment_method: str) -> tuple[str, str] | None:
    saved = parse_off_session_token(payment_method)
    return card_details(saved[1] if saved else payment_method)


def _charge_result(charge: RecordedCharge) -> ChargeResult:
    if charge.status is ChargeRecordStatus.SUCCEEDED:
        brand, last4 = _card_of(charge.payment_method) or (None, None)
        return ChargeResult(
            ChargeStatus.SUCCEEDED, charge.reference, charge.amount, charge.fee, card_brand=brand, card_last4=last4
        )
    if charge.status is ChargeRecordStatus.DECLINED:
        return ChargeResult(
            ChargeStatus.DECLINED,
            charge.reference,
            charge.amount,
            decline_code=charge.decline_code,
            message=charge.message,
        )
    if charge.status is ChargeRecordStatus.REQUIRES_ACTION:
        return ChargeResult(ChargeStatus.PENDING, charge.reference, charge.amount, message=charge.message)
    raise RuntimeError(f"recorded charge {charge.reference} has no result for status {charge.status}")


def _replay_result(charge: RecordedCharge, request: ChargeRequest) -> ChargeResult:
    """The first answer for this key, or Stripe's idempotency error when the request is not the same."""
    same = (
        charge.amount == request.amount
        and charge.payment_method == request.payment_method
        and charge.donation_id == request.donation_id
    )
    if same:
        return _charge_result(charge)
    return ChargeResult(
        ChargeStatus.FAILED,
        decline_code="idempotency_error",
        message=store.IDEMPOTENCY_MISMATCH_MESSAGE.format(key=request.idempotency_key),
    )
