"""The donation pipeline: intake → charge (now, or from the durable queue) → settle, exactly once.

A request that finds processor capacity (a rate token, a free slot, a closed breaker) is recorded as ``charging``
with a lease and charged at once; otherwise it is recorded ``queued`` and answered 202. The queue runner of every
engine process claims due rows with ``FOR UPDATE SKIP LOCKED`` and charges them in order as the budget allows. A
row whose lease expired while ``charging`` (crash, timeout) or that is ``pending`` is first looked up at the
processor by its idempotency key — never charged blindly — and charged only when the processor has no record of it.
The idempotency key sent to the processor is derived from the donation id, so even that charge cannot double.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from adapters.base import ChargeRequest, ChargeResult, ChargeStatus, Processor
from engine.campaigns import Campaign
from engine.keys import ApiKey
from engine.metrics import Metrics
from engine.pipeline.donation_request import DonationRequest
from engine.pipeline.donations import DONATION_COLUMNS, Donation, fetch_donation, new_donation_id
from engine.pipeline.gate import ProcessorGate
from engine.pipeline.intake import IntakeItem, IntakeOutcome, IntakeResult, VelocityLimits, commit_intake
from engine.pipeline.outcomes import Overload, OverloadError, Refusal, RefusalReason
from engine.pipeline.settlement import Settlement, commit_settlements
from ledger.accounts import AccountDirectory
from ledger.batcher import BatcherFullError, BatcherLimits, GroupCommitter
from ledger.money import Money

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineLimits:
    charge_timeout_ms: int = 8_000
    lease_grace_ms: int = 5_000  # a charging row is recovered this long after its charge would have timed out
    in_flight_max: int = 2_000  # donation requests inside the pipeline at once (per process)
    queue_depth_max: int = 200_000  # durable queue rows before intake sheds load with 503
    queue_poll_ms: int = 200
    claim_batch_max: int = 100
    retry_delay_ms: int = 2_000  # first delay before retrying a retryable charge or looking up an unknown one
    retry_delay_max_ms: int = 300_000
    velocity: VelocityLimits = field(default_factory=VelocityLimits)

    def __post_init__(self) -> None:
        for name in ("charge_timeout_ms", "in_flight_max", "queue_depth_max", "queue_poll_ms", "claim_batch_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def lease(self) -> timedelta:
        return timedelta(milliseconds=self.charge_timeout_ms + self.lease_grace_ms)


def processor_idempotency_key(donation_id: str) -> str:
    return f"surge-{donation_id}"


class Pipeline:
    def __init__(
        self,
        pool: asyncpg.Pool,
        accounts: AccountDirectory,
        processors: Sequence[tuple[Processor, ProcessorGate]],
        limits: PipelineLimits,
        batcher_limits: BatcherLimits,
        metrics: Metrics,
    ) -> None:
        if not processors:
            raise ValueError("at least one processor is needed")
        self._pool = pool
        self._processors = list(processors)  # in priority order: failover goes down the list
        self._by_name = {p.name: (p, g) for p, g in processors}
        self.limits = limits
        self.metrics = metrics
        self._intake: GroupCommitter[IntakeItem, IntakeResult] = GroupCommitter(
            pool,
            lambda connection, items: commit_intake(connection, items, limits.velocity),
            batcher_limits,
            name="intake",
            observer=metrics.observe_batch,
        )
        self._settle: GroupCommitter[Settlement, bool] = GroupCommitter(
            pool,
            lambda connection, items: commit_settlements(connection, accounts, items),
            batcher_limits,
            name="settle",
            observer=metrics.observe_batch,
        )
        self._in_flight = 0
        self._queue_depth = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- life cycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._intake.start()
        self._settle.start()
        self._runner = asyncio.create_task(self._run_queue(), name="queue-runner")

    async def stop(self, timeout_s: float = 20.0) -> None:
        """Stop claiming; let in-flight charges finish (their rows stay leased and are recovered if they don't)."""
        self._stopping = True
        self._wake.set()
        if self._runner is not None:
            await self._runner
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._intake.stop()
        await self._settle.stop()

    @property
    def queue_depth(self) -> int:
        return self._queue_depth

    # -- intake -----------------------------------------------------------------------------------------------------

    async def submit(
        self, key: ApiKey, idempotency_key: str, request: DonationRequest, campaign: Campaign, client_ip: str | None
    ) -> Donation | Refusal:
        """Accept, charge (or queue) a donation; raises :class:`OverloadError` when it cannot be taken now."""
        if self._stopping:
            raise OverloadError(Overload.SHUTTING_DOWN)
        if self._in_flight >= self.limits.in_flight_max:
            raise OverloadError(Overload.IN_FLIGHT_FULL)
        if self._queue_depth >= self.limits.queue_depth_max:
            raise OverloadError(Overload.QUEUE_FULL)
        self._in_flight += 1
        self.metrics.in_flight.inc()
        try:
            return await self._submit(key, idempotency_key, request, campaign, client_ip)
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.dec()

    async def _submit(
        self, key: ApiKey, idempotency_key: str, request: DonationRequest, campaign: Campaign, client_ip: str | None
    ) -> Donation | Refusal:
        chosen = self._acquire_any()
        now = datetime.now(UTC)
        item = IntakeItem(
            donation_id=new_donation_id(),
            api_key_id=key.id,
            idempotency_key=idempotency_key,
            request=request,
            campaign=campaign,
            status="charging" if chosen else "queued",
            next_attempt_at=now + self.limits.lease if chosen else now,
            processor=chosen[0].name if chosen else None,
            client_ip=client_ip,
            created_at=now,
        )
        try:
            result = await self._intake.submit_nowait(item)
        except BatcherFullError:
            self._return_unused(chosen)
            raise OverloadError(Overload.INTAKE_SATURATED) from None
        except BaseException:
            self._return_unused(chosen)
            raise
        if result.outcome is not IntakeOutcome.ACCEPTED:
            self._return_unused(chosen)
            return _refusal(result, campaign)
        donation = _donation_from_item(item)
        if chosen is None:
            self._queue_depth += 1
            self._wake.set()
            return donation
        processor, gate = chosen
        charge = await self._call_charge(processor, gate, donation)
        return await self._apply(donation, processor.name, charge)

    def _acquire_any(self) -> tuple[Processor, ProcessorGate] | None:
        for processor, gate in self._processors:
            if gate.try_acquire():
                return processor, gate
        return None

    @staticmethod
    def _return_unused(chosen: tuple[Processor, ProcessorGate] | None) -> None:
        if chosen is not None:
            chosen[1].return_unused()

    # -- charging ---------------------------------------------------------------------------------------------------

    async def _call_charge(self, processor: Processor, gate: ProcessorGate, donation: Donation) -> ChargeResult:
        request = ChargeRequest(
            idempotency_key=processor_idempotency_key(donation.id),
            donation_id=donation.id,
            amount=Money(donation.amount_minor, donation.currency),
            payment_method=donation.payment_method,
            campaign=donation.campaign,
            metadata={"donation_id": donation.id, "campaign": donation.campaign},
        )
        result = await self._call(processor, "charge", processor.charge(request))
        gate.release(result.status)
        return result

    async def _call_lookup(self, processor: Processor, gate: ProcessorGate, donation: Donation) -> ChargeResult:
        result = await self._call(
            processor, "lookup", processor.lookup(processor_idempotency_key(donation.id), donation.processor_reference)
        )
        gate.release(result.status)
        return result

    async def _call(self, processor: Processor, call: str, awaitable: Awaitable[ChargeResult]) -> ChargeResult:
        try:
            async with asyncio.timeout(self.limits.charge_timeout_ms / 1000):
                result = await awaitable
        except TimeoutError:
            result = ChargeResult(ChargeStatus.UNKNOWN, message=f"{processor.name} did not answer in time")
        except Exception:
            _logger.exception("%s.%s raised; treating the outcome as unknown", processor.name, call)
            result = ChargeResult(ChargeStatus.UNKNOWN, message=f"{processor.name} call failed")
        self.metrics.processor_outcomes.labels(processor.name, call, result.status.value).inc()
        return result

    async def _apply(self, donation: Donation, processor: str, result: ChargeResult) -> Donation:
        """Record a charge or lookup outcome; returns the donation as it now stands."""
        status = result.status
        if status in (ChargeStatus.SUCCEEDED, ChargeStatus.DECLINED, ChargeStatus.FAILED):
            settlement = Settlement(
                donation.id,
                status.value,
                processor,
                processor_reference=result.processor_reference,
                fee_minor=result.fee.amount_minor if result.fee else None,
                decline_code=result.decline_code,
                failure_message=result.message if status is not ChargeStatus.SUCCEEDED else None,
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
                fee_minor=settlement.fee_minor,
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

    # -- the durable queue and recovery -----------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def _run_queue(self) -> None:
        last_count = 0.0
        while not self._stopping:
            try:
                if time.monotonic() - last_count > 1.0:
                    await self._count_queue()
                    last_count = time.monotonic()
                claimed = await self._claim_due()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                _logger.warning("queue runner: %s; retrying", error)
                claimed = 0
            except Exception:
                _logger.exception("queue runner failed; retrying")
                claimed = 0
            if claimed == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.limits.queue_poll_ms / 1000)

    async def _count_queue(self) -> None:
        self._queue_depth = await self._pool.fetchval(
            "SELECT count(*) FROM surge.donations WHERE status IN ('queued', 'charging', 'pending')"
        )
        self.metrics.queue_depth.labels("durable").set(self._queue_depth)

    async def _claim_due(self) -> int:
        capacity = sum(gate.capacity() for _, gate in self._processors)
        if capacity == 0:
            return 0
        rows = await self._pool.fetch(
            f"""WITH due AS (
                    SELECT id, status AS previous_status FROM surge.donations
                     WHERE status IN ('queued', 'charging', 'pending') AND next_attempt_at <= now()
                     ORDER BY next_attempt_at, created_at
                     LIMIT $1 FOR UPDATE SKIP LOCKED)
                UPDATE surge.donations d
                   SET status = 'charging', attempts = d.attempts + 1, updated_at = now(),
                       next_attempt_at = now() + make_interval(secs => $2)
                  FROM due WHERE d.id = due.id
             RETURNING due.previous_status, {", ".join("d." + c.strip() for c in DONATION_COLUMNS.split(","))}""",
            min(capacity, self.limits.claim_batch_max),
            self.limits.lease.total_seconds(),
        )
        for row in rows:
            task = asyncio.create_task(self._process_claimed(Donation.from_row(row), row["previous_status"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def _process_claimed(self, donation: Donation, previous_status: str) -> None:
        try:
            await self._process(donation, previous_status)
        except Exception:
            # The row keeps its lease and is retried after it expires.
            _logger.exception("processing queued donation %s failed", donation.id)

    async def _process(self, donation: Donation, previous_status: str) -> None:
        may_exist = previous_status in ("charging", "pending") and donation.processor is not None
        if may_exist:
            chosen = self._by_name.get(donation.processor or "")
            if chosen is None:
                _logger.error("donation %s was sent to unknown processor %s", donation.id, donation.processor)
                return
            if not chosen[1].try_acquire():
                await self._reschedule(donation.id, previous_status)
                return
            found = await self._call_lookup(chosen[0], chosen[1], donation)
            if found.status is not ChargeStatus.NOT_FOUND:
                await self._apply(donation, chosen[0].name, found)
                return
            if not chosen[1].try_acquire():
                # Stay with this processor: a request it never answered may still land there, and only the same
                # processor deduplicates by our idempotency key.
                await self._reschedule(donation.id, "pending")
                return
        else:
            acquired = self._acquire_any()
            if acquired is None:
                await self._reschedule(donation.id, previous_status)
                return
            chosen = acquired
            try:
                # Recorded before the call, so that recovery knows where to look the charge up.
                await self._pool.execute(
                    "UPDATE surge.donations SET processor = $2 WHERE id = $1", donation.id, chosen[0].name
                )
            except BaseException:
                self._return_unused(chosen)
                raise
        result = await self._call_charge(chosen[0], chosen[1], donation)
        await self._apply(donation, chosen[0].name, result)

    async def _reschedule(self, donation_id: str, status: str) -> None:
        await self._pool.execute(
            # No processor call was made: the claim's attempt is given back, so that it does not lengthen the
            # backoff of the next real retry.
            """UPDATE surge.donations
                  SET status = $2, attempts = attempts - 1, next_attempt_at = now() + interval '200 milliseconds'
                WHERE id = $1 AND status = 'charging'""",
            donation_id,
            status,
        )


def _donation_from_item(item: IntakeItem) -> Donation:
    request = item.request
    return Donation(
        id=item.donation_id,
        api_key_id=item.api_key_id,
        idempotency_key=item.idempotency_key,
        request_fingerprint=request.fingerprint,
        campaign=item.campaign.slug,
        election=item.campaign.election,
        donor_key=request.donor_key,
        amount_minor=request.amount_minor,
        currency=request.currency,
        payment_method=request.payment_method,
        donor=request.donor,
        metadata=request.metadata,
        status=item.status,
        processor=item.processor,
        processor_reference=None,
        decline_code=None,
        failure_message=None,
        fee_minor=None,
        refunded_minor=0,
        disputed_minor=0,
        attempts=0,
        created_at=item.created_at,
        updated_at=item.created_at,
        settled_at=None,
    )


def _refusal(result: IntakeResult, campaign: Campaign) -> Donation | Refusal:
    outcome = result.outcome
    if outcome is IntakeOutcome.REPLAY:
        donation = result.donation
        if donation is None or donation.status == "charging":
            return Refusal(RefusalReason.IDEMPOTENCY_IN_PROGRESS, campaign, donation)
        return donation
    reasons = {
        IntakeOutcome.IDEMPOTENCY_MISMATCH: RefusalReason.IDEMPOTENCY_MISMATCH,
        IntakeOutcome.LIMIT_EXCEEDED: RefusalReason.LIMIT_EXCEEDED,
        IntakeOutcome.EMPLOYER_REQUIRED: RefusalReason.EMPLOYER_REQUIRED,
        IntakeOutcome.VELOCITY_EXCEEDED: RefusalReason.VELOCITY_EXCEEDED,
    }
    reason = reasons.get(outcome)
    if reason is None:
        raise RuntimeError(f"unhandled intake outcome {outcome}")
    return Refusal(reason, campaign, aggregate_minor=result.aggregate_minor, room_minor=result.room_minor)
