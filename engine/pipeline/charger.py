"""One processor call (charge or lookup) under a timeout, and recording its outcome on the donation.

A final outcome (succeeded, declined, failed) is settled through the settle batcher; pending and unknown ones are
looked up later, retryable ones go back to the queue, with an exponential backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime

import asyncpg

from adapters.base import ChargeRequest, ChargeResult, ChargeStatus, Processor
from engine.metrics import Metrics
from engine.pipeline.donations import Donation, fetch_donation
from engine.pipeline.gate import ProcessorGate
from engine.pipeline.limits import PipelineLimits
from engine.pipeline.settlement import Settlement
from ledger.batcher import GroupCommitter
from ledger.money import Money

_logger = logging.getLogger(__name__)

Chosen = tuple[Processor, ProcessorGate]

# Seconds spent waiting on processors by the current task: a request's charge runs on the request's own task, so the
# API can tell the client (Server-Timing) how much of its answer's time was the processor's and how much Surge's own.
processor_seconds: ContextVar[float] = ContextVar("processor_seconds", default=0.0)


def processor_idempotency_key(donation_id: str) -> str:
    return f"surge-{donation_id}"


class Charger:
    def __init__(
        self,
        pool: asyncpg.Pool,
        processors: Sequence[Chosen],
        settle: GroupCommitter[Settlement, bool],
        limits: PipelineLimits,
        metrics: Metrics,
    ) -> None:
        if not processors:
            raise ValueError("at least one processor is needed")
        self._pool = pool
        self.processors = list(processors)  # in priority order: failover goes down the list
        self.by_name = {p.name: (p, g) for p, g in processors}
        self._settle = settle
        self.limits = limits
        self.metrics = metrics

    def acquire_any(self) -> Chosen | None:
        for processor, gate in self.processors:
            if gate.try_acquire():
                return processor, gate
        return None

    @staticmethod
    def return_unused(chosen: Chosen | None) -> None:
        if chosen is not None:
            chosen[1].return_unused()

    def capacity(self) -> int:
        return sum(gate.capacity() for _, gate in self.processors)

    async def charge(self, processor: Processor, gate: ProcessorGate, donation: Donation) -> ChargeResult:
        request = ChargeRequest(
            idempotency_key=processor_idempotency_key(donation.id),
            donation_id=donation.id,
            amount=Money(donation.amount_minor, donation.currency),
            payment_method=donation.payment_method,
            campaign=donation.campaign,
            metadata={"donation_id": donation.id, "campaign": donation.campaign},
        )
        status: ChargeStatus | None = None  # None when the call never completed (cancelled, e.g. at shutdown)
        try:
            result = await self._call(processor, "charge", processor.charge(request))
            status = result.status
        finally:
            gate.release(status)
        return result

    async def lookup(self, processor: Processor, gate: ProcessorGate, donation: Donation) -> ChargeResult:
        status: ChargeStatus | None = None
        try:
            result = await self._call(
                processor,
                "lookup",
                processor.lookup(processor_idempotency_key(donation.id), donation.processor_reference),
            )
            status = result.status
        finally:
            gate.release(status)
        return result

    async def _call(self, processor: Processor, call: str, awaitable: Awaitable[ChargeResult]) -> ChargeResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.limits.charge_timeout_ms / 1000):
                result = await awaitable
        except TimeoutError:
            result = ChargeResult(ChargeStatus.UNKNOWN, message=f"{processor.name} did not answer in time")
        except Exception:
            _logger.exception("%s.%s raised; treating the outcome as unknown", processor.name, call)
            result = ChargeResult(ChargeStatus.UNKNOWN, message=f"{processor.name} call failed")
        finally:
            processor_seconds.set(processor_seconds.get() + time.perf_counter() - started)
        self.metrics.processor_outcomes.labels(processor.name, call, result.status.value).inc()
        return result

    async def fail_unsent(self, donation: Donation, decline_code: str, message: str) -> bool:
        """Settle as failed a donation no processor was ever sent (its hold released, like any failure); False when
        it was already final."""
        # No processor decided it, so none is recorded (NULL: "never sent").
        unsent = Settlement(donation.id, "failed", None, decline_code=decline_code, failure_message=message)
        return await self._settle.submit(unsent)

    async def apply(self, donation: Donation, processor: str, result: ChargeResult) -> Donation:
        """Record a charge or lookup outcome; returns the donation as it now stands."""
        status = result.status
        if status in (ChargeStatus.SUCCEEDED, ChargeStatus.DECLINED, ChargeStatus.FAILED):
            settlement = Settlement(
                donation.id,
                status.value,
                processor,
                processor_reference=result.processor_reference,
                fee=result.fee,
                decline_code=result.decline_code,
                failure_message=result.message if status is not ChargeStatus.SUCCEEDED else None,
                card_brand=result.card_brand,
                card_last4=result.card_last4,
            )
            settled = await self._settle.submit(settlement)
            if not settled:  # someone else (a webhook, another process) settled it first: theirs is the truth
                current = await fetch_donation(self._pool, donation.id)
                return current or donation
            self.metrics.time_to_charge.observe((datetime.now(UTC) - donation.created_at).total_seconds())
            return dataclasses.replace(
                donation,
                status=status.value,
                processor=processor,
                processor_reference=result.processor_reference,
                fee_minor=result.fee.amount_minor if result.fee else None,
                decline_code=result.decline_code,
                failure_message=settlement.failure_message,
                settled_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
        # Not final: pending / unknown are looked up later; retryable goes back to the queue (any processor).
        next_status = "queued" if status is ChargeStatus.RETRYABLE else "pending"
        delay_ms = min(self.limits.retry_delay_ms * 2 ** min(donation.attempts, 10), self.limits.retry_delay_max_ms)
        await self._pool.execute(
            """UPDATE surge.donations
                  SET status = $2, processor = CASE WHEN $2 = 'queued' THEN NULL ELSE $3 END,
                      processor_reference = coalesce($4, processor_reference), failure_message = $5,
                      next_attempt_at = now() + make_interval(secs => $6), updated_at = now()
                WHERE id = $1 AND status = 'charging'""",
            donation.id,
            next_status,
            processor,
            result.processor_reference,
            result.message,
            delay_ms / 1000,
        )
        return dataclasses.replace(donation, status=next_status, processor=processor, updated_at=datetime.now(UTC))
