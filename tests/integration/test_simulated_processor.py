"""The simulated processor on a real PostgreSQL: its record, idempotency, faults, refunds, disputes, payouts and
webhooks, checked against the record it keeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from adapters.base import (
    BalanceTransaction,
    BalanceTransactionType,
    ChargeRequest,
    ChargeStatus,
    EventType,
    RefundRequest,
    RefundStatus,
    WebhookSignatureError,
)
from adapters.simulated import (
    SIGNATURE_HEADER,
    ChargeRecordStatus,
    OutageWindow,
    SimulatedConfig,
    SimulatedProcessor,
    SimulatorError,
)
from ledger.money import Money
from tests.waiting import wait_until

USD = "USD"
FAR_PAST = datetime(2000, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def charge_request(
    key: str, amount_minor: int = 1000, payment_method: str = "pm_card_visa", currency: str = USD
) -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=key,
        donation_id=f"don_{key}",
        amount=Money(amount_minor, currency),
        payment_method=payment_method,
        campaign="demo",
        metadata={"donor": "ada"},
    )


def refund_request(key: str, reference: str, amount_minor: int) -> RefundRequest:
    return RefundRequest(
        idempotency_key=key, refund_id=f"ref_{key}", processor_reference=reference, amount=Money(amount_minor, USD)
    )


@pytest.fixture
async def processor(pool: asyncpg.Pool) -> AsyncIterator[SimulatedProcessor]:
    async with SimulatedProcessor(pool, SimulatedConfig(hang_s=5.0)) as simulated:
        yield simulated


async def succeeded_charge(processor: SimulatedProcessor, key: str, amount_minor: int = 1000) -> str:
    result = await processor.charge(charge_request(key, amount_minor))
    assert result.status is ChargeStatus.SUCCEEDED and result.processor_reference is not None
    return result.processor_reference


# ---- charges and the record --------------------------------------------------------------------------------------


async def test_a_charge_is_durable_before_its_answer(processor: SimulatedProcessor, database_url: str) -> None:
    result = await processor.charge(charge_request("k1", 1000))
    assert result.status is ChargeStatus.SUCCEEDED
    assert (result.amount, result.fee) == (Money(1000, USD), Money(52, USD))
    assert result.processor_reference is not None and result.processor_reference.startswith("pi_sim_")
    # Another connection sees it at once: committed, so it survives the engine being killed right now.
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow(
            "SELECT status, amount, fee, donation_id FROM simulator.charges WHERE id = $1", result.processor_reference
        )
    finally:
        await connection.close()
    assert row is not None and tuple(row) == ("succeeded", 1000, 52, "don_k1")
    [charge] = await processor.charges()
    assert (charge.reference, charge.donation_id, charge.campaign, charge.payment_method) == (
        result.processor_reference,
        "don_k1",
        "demo",
        "pm_card_visa",
    )


@pytest.mark.parametrize(
    ("token", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_chargeDeclinedStolenCard", "stolen_card"),
    ],
)
async def test_declines_are_recorded_with_their_code(
    processor: SimulatedProcessor, token: str, decline_code: str
) -> None:
    result = await processor.charge(charge_request("k1", payment_method=token))
    assert (result.status, result.decline_code, result.fee) == (ChargeStatus.DECLINED, decline_code, None)
    [charge] = await processor.charges()
    assert (charge.status, charge.decline_code, charge.fee) == (
        ChargeRecordStatus.DECLINED,
        decline_code,
        Money(0, USD),
    )
    assert await processor.balance_transactions(FAR_PAST, FAR_FUTURE) == []
    # The replay answers the same decline; it does not try the card again.
    assert await processor.charge(charge_request("k1", payment_method=token)) == result


async def test_invalid_requests_fail_and_leave_no_record(processor: SimulatedProcessor) -> None:
    unknown = await processor.charge(charge_request("k1", payment_method="pm_card_unheard_of"))
    assert (unknown.status, unknown.decline_code, unknown.processor_reference) == (
        ChargeStatus.FAILED,
        "invalid_payment_method",
        None,
    )
    zero = await processor.charge(charge_request("k2", amount_minor=0))
    assert (zero.status, zero.decline_code) == (ChargeStatus.FAILED, "amount_too_small")
    assert await processor.charges() == []
    assert (await processor.lookup("k1", None)).status is ChargeStatus.NOT_FOUND


async def test_same_key_twice_is_one_charge(processor: SimulatedProcessor) -> None:
    first = await processor.charge(charge_request("k1"))
    second = await processor.charge(charge_request("k1"))
    assert second == first
    assert len(await processor.charges()) == 1


async def test_a_key_reused_with_different_parameters_is_an_idempotency_error(processor: SimulatedProcessor) -> None:
    await succeeded_charge(processor, "k1", 1000)
    for different in (charge_request("k1", 1001), charge_request("k1", payment_method="pm_card_amex")):
        result = await processor.charge(different)
        assert (result.status, result.decline_code) == (ChargeStatus.FAILED, "idempotency_error")
        assert result.message is not None and "same parameters" in result.message
    [charge] = await processor.charges()
    assert charge.amount == Money(1000, USD)


async def test_concurrent_same_key_charges_across_processes_make_one_charge(pool: asyncpg.Pool) -> None:
    # Two instances with their own committers stand for two engine processes sharing the record.
    async with SimulatedProcessor(pool) as one, SimulatedProcessor(pool) as two:
        results = await asyncio.gather(*(p.charge(charge_request("hot")) for p in (one, two) * 40))
        assert {r.status for r in results} == {ChargeStatus.SUCCEEDED}
        assert len({r.processor_reference for r in results}) == 1
        assert len(await one.charges()) == 1
        assert len(await one.balance_transactions(FAR_PAST, FAR_FUTURE)) == 1


async def test_many_concurrent_charges_are_all_recorded(processor: SimulatedProcessor) -> None:
    requests = [charge_request(f"k{n}", 100 + n) for n in range(600)]
    results = await asyncio.gather(*(processor.charge(r) for r in requests))
    assert all(r.status is ChargeStatus.SUCCEEDED for r in results)
    charges = await processor.charges()
    assert len(charges) == 600
    assert sum(c.amount.amount_minor for c in charges) == sum(100 + n for n in range(600))


async def test_processors_with_different_names_keep_separate_accounts(pool: asyncpg.Pool) -> None:
    async with SimulatedProcessor(pool, name="sim-a") as a, SimulatedProcessor(pool, name="sim-b") as b:
        first = await a.charge(charge_request("k1"))
        second = await b.charge(charge_request("k1"))
        assert first.processor_reference != second.processor_reference
        assert (await b.lookup("k1", first.processor_reference)).processor_reference == second.processor_reference
        assert len(await a.charges()) == len(await b.charges()) == 1


# ---- lookup and timeouts -----------------------------------------------------------------------------------------


async def test_lookup_finds_by_key_or_reference(processor: SimulatedProcessor) -> None:
    reference = await succeeded_charge(processor, "k1")
    declined = await processor.charge(charge_request("k2", payment_method="pm_card_chargeDeclinedExpiredCard"))
    found = await processor.lookup("k1", None)
    assert (found.status, found.processor_reference, found.amount, found.fee) == (
        ChargeStatus.SUCCEEDED,
        reference,
        Money(1000, USD),
        Money(52, USD),
    )
    assert (await processor.lookup("unknown-key", reference)).processor_reference == reference
    assert (await processor.lookup("k2", None)) == declined
    assert (await processor.lookup("nope", None)).status is ChargeStatus.NOT_FOUND
    assert (await processor.lookup("nope", "pi_sim_nope")).status is ChargeStatus.NOT_FOUND


async def test_timeout_after_the_charge_is_found_by_lookup(processor: SimulatedProcessor) -> None:
    request = charge_request("k1", payment_method="pm_sim_timeout_charged")
    caller = asyncio.create_task(processor.charge(request))

    async def charged() -> bool:
        return (await processor.lookup("k1", None)).status is ChargeStatus.SUCCEEDED

    # The event is the charge on record, not a guessed delay: once it is there the call still hangs, and the caller
    # gives up on it the way an engine's timeout does.
    await wait_until(charged, what="the timing-out charge to be on record")
    assert not caller.done()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    found = await processor.lookup("k1", None)
    # A replay with the same key answers at once with the charge that happened.
    replay = await asyncio.wait_for(processor.charge(request), 2)
    assert (replay.status, replay.processor_reference) == (ChargeStatus.SUCCEEDED, found.processor_reference)
    assert len(await processor.charges()) == 1


async def test_timeout_before_the_charge_leaves_nothing(processor: SimulatedProcessor) -> None:
    request = charge_request("k1", payment_method="pm_sim_timeout_lost")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(processor.charge(request), 0.3)
    assert (await processor.lookup("k1", None)).status is ChargeStatus.NOT_FOUND
    assert await processor.charges() == []


async def test_a_timeout_answers_unknown_after_hanging(pool: asyncpg.Pool) -> None:
    async with SimulatedProcessor(pool, SimulatedConfig(hang_s=0.05)) as processor:
        for token in ("pm_sim_timeout_charged", "pm_sim_timeout_lost"):
            result = await processor.charge(charge_request(token, payment_method=token))
            assert (result.status, result.processor_reference) == (ChargeStatus.UNKNOWN, None)
        [charge] = await processor.charges()
        assert charge.idempotency_key == "pm_sim_timeout_charged"


async def test_random_timeouts_and_declines_are_recorded_truthfully(pool: asyncpg.Pool) -> None:
    config = SimulatedConfig(decline_rate=0.3, timeout_rate=0.3, hang_s=0.01, seed=2)
    async with SimulatedProcessor(pool, config) as processor:
        results = await asyncio.gather(*(processor.charge(charge_request(f"k{n}")) for n in range(200)))
        statuses = {r.status for r in results}
        assert statuses == {ChargeStatus.SUCCEEDED, ChargeStatus.DECLINED, ChargeStatus.UNKNOWN}
        # Every answer matches the record: lookups settle the unknowns one way or the other.
        for n, result in enumerate(results):
            found = await processor.lookup(f"k{n}", None)
            if result.status is ChargeStatus.UNKNOWN:
                assert found.status in (ChargeStatus.SUCCEEDED, ChargeStatus.NOT_FOUND)
            else:
                assert found == result


async def test_a_caller_that_gives_up_during_the_write_still_finds_the_charge(pool: asyncpg.Pool) -> None:
    async with SimulatedProcessor(pool) as processor:
        task = asyncio.create_task(processor.charge(charge_request("k1")))
        # The caller gives up once its write is handed to the record (and before that write commits: the poll
        # yields one loop turn at a time, fewer than a commit takes).
        await wait_until(lambda: "k1" in processor._in_flight, interval=0, what="the charge's write handed over")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The write was handed over before the caller left, so it lands; the lookup waits for it rather than
        # answering NOT_FOUND a moment before the charge appears.
        assert (await processor.lookup("k1", None)).status is ChargeStatus.SUCCEEDED
        assert len(await processor.charges()) == 1


# ---- outages and the rate cap ------------------------------------------------------------------------------------


async def test_an_outage_turns_requests_away_before_acceptance(pool: asyncpg.Pool) -> None:
    config = SimulatedConfig(outages=(OutageWindow(0.0, 3600.0, relative=True),))
    async with SimulatedProcessor(pool, config) as down, SimulatedProcessor(pool) as up:
        reference = await succeeded_charge(up, "before")
        result = await down.charge(charge_request("k1"))
        assert result.status is ChargeStatus.RETRYABLE and "outage" in (result.message or "")
        assert (await down.lookup("before", None)).status is ChargeStatus.UNKNOWN  # not "not found"
        refund = await down.refund(refund_request("r1", reference, 100))
        assert refund.status is RefundStatus.RETRYABLE
        assert [c.idempotency_key for c in await up.charges()] == ["before"]
        assert await up.refunds() == []


async def test_an_outage_that_has_ended_lets_requests_through(pool: asyncpg.Pool) -> None:
    config = SimulatedConfig(outages=(OutageWindow(1.0, 2.0),))  # in 1970
    async with SimulatedProcessor(pool, config) as processor:
        assert (await processor.charge(charge_request("k1"))).status is ChargeStatus.SUCCEEDED


async def test_the_rate_cap_answers_rate_limited(pool: asyncpg.Pool) -> None:
    config = SimulatedConfig(charges_per_s_max=0.5, charges_burst_max=2)
    async with SimulatedProcessor(pool, config) as processor:
        results = [await processor.charge(charge_request(f"k{n}")) for n in range(3)]
        assert [r.status for r in results] == [ChargeStatus.SUCCEEDED, ChargeStatus.SUCCEEDED, ChargeStatus.RETRYABLE]
        assert results[2].message is not None and "rate limited" in results[2].message
        assert len(await processor.charges()) == 2


async def test_latency_delays_the_answer(pool: asyncpg.Pool) -> None:
    config = SimulatedConfig(latency_ms_median=60.0, latency_ms_p99=60.0)
    async with SimulatedProcessor(pool, config) as processor:
        started = asyncio.get_running_loop().time()
        await processor.charge(charge_request("k1"))
        assert asyncio.get_running_loop().time() - started >= 0.055


# ---- refunds -----------------------------------------------------------------------------------------------------


async def test_partial_refunds_up_to_the_charge_and_no_further(processor: SimulatedProcessor) -> None:
    reference = await succeeded_charge(processor, "k1", 1000)
    first = await processor.refund(refund_request("r1", reference, 300))
    assert first.status is RefundStatus.SUCCEEDED and (first.processor_reference or "").startswith("re_sim_")
    too_much = await processor.refund(refund_request("r2", reference, 701))
    assert too_much.status is RefundStatus.FAILED and "greater than unrefunded amount" in (too_much.message or "")
    rest = await processor.refund(refund_request("r3", reference, 700))
    assert rest.status is RefundStatus.SUCCEEDED
    assert (await processor.refund(refund_request("r4", reference, 1))).status is RefundStatus.FAILED
    refunds = await processor.refunds()
    assert [(r.idempotency_key, r.refund_id, r.amount.amount_minor) for r in refunds] == [
        ("r1", "ref_r1", 300),
        ("r3", "ref_r3", 700),
    ]
    [charge] = await processor.charges()
    assert charge.amount_refunded == Money(1000, USD)


async def test_refunds_are_idempotent(processor: SimulatedProcessor) -> None:
    reference = await succeeded_charge(processor, "k1", 1000)
    first = await processor.refund(refund_request("r1", reference, 600))
    assert await processor.refund(refund_request("r1", reference, 600)) == first
    different = await processor.refund(refund_request("r1", reference, 500))
    assert different.status is RefundStatus.FAILED and "same parameters" in (different.message or "")
    assert len(await processor.refunds()) == 1


async def test_refunds_of_charges_that_took_no_money_are_refused(processor: SimulatedProcessor) -> None:
    declined = await processor.charge(charge_request("k1", payment_method="pm_card_chargeDeclined"))
    pending = await processor.charge(charge_request("k2", payment_method="pm_card_authenticationRequired"))
    for reference in (declined.processor_reference, pending.processor_reference, "pi_sim_missing"):
        assert reference is not None
        result = await processor.refund(refund_request(f"r-{reference}", reference, 100))
        assert result.status is RefundStatus.FAILED and result.message
    eur = await processor.charge(charge_request("k3", currency="EUR"))
    assert eur.processor_reference is not None
    wrong_currency = await processor.refund(refund_request("r-eur", eur.processor_reference, 100))
    assert wrong_currency.status is RefundStatus.FAILED
    assert await processor.refunds() == []


async def test_racing_refunds_never_exceed_the_charge(pool: asyncpg.Pool) -> None:
    async with SimulatedProcessor(pool) as one, SimulatedProcessor(pool) as two:
        reference = await succeeded_charge(one, "k1", 1000)
        results = await asyncio.gather(
            *(
                p.refund(refund_request(f"r{n}-{i}", reference, 100))
                for n in range(12)
                for i, p in enumerate((one, two))
            )
        )
        assert sum(1 for r in results if r.status is RefundStatus.SUCCEEDED) == 10
        assert sum(r.amount.amount_minor for r in await one.refunds()) == 1000


async def test_the_database_refuses_an_over_refund_whatever_the_code(
    processor: SimulatedProcessor, pool: asyncpg.Pool
) -> None:
    reference = await succeeded_charge(processor, "k1", 1000)
    async with pool.acquire() as connection:
        with pytest.raises(asyncpg.PostgresError, match="would be refunded"):
            await connection.execute(
                """INSERT INTO simulator.refunds (id, account, idempotency_key, refund_id, charge_id, amount, currency)
                   VALUES ('re_x', 'simulated', 'x', 'x', $1, 1001, 'USD')""",
                reference,
            )


async def test_a_refund_sends_a_verifiable_webhook(processor: SimulatedProcessor) -> None:
    reference = await succeeded_charge(processor, "k1", 1000)
    refund = await processor.refund(refund_request("r1", reference, 250))
    [webhook] = await processor.webhooks()
    event = processor.parse_webhook(webhook.payload, webhook.headers)
    assert (event.type, event.processor_reference, event.donation_id, event.amount, event.object_id) == (
        EventType.REFUND_UPDATED,
        reference,
        "don_k1",
        Money(250, USD),
        refund.processor_reference,
    )
    assert (event.refund_status, event.refund_id) == (RefundStatus.SUCCEEDED, "ref_r1")  # Surge's id, from metadata


async def test_a_refund_is_found_by_its_key_after_the_answer_was_lost(processor: SimulatedProcessor) -> None:
    reference = await succeeded_charge(processor, "k1", 1000)
    request = refund_request("r1", reference, 250)
    assert (await processor.lookup_refund(request, None)).status is RefundStatus.NOT_FOUND
    made = await processor.refund(request)
    found = await processor.lookup_refund(request, None)
    assert (found.status, found.processor_reference) == (RefundStatus.SUCCEEDED, made.processor_reference)
    by_reference = await processor.lookup_refund(refund_request("other", reference, 250), made.processor_reference)
    assert by_reference.processor_reference == made.processor_reference


# ---- disputes, payouts and webhooks ------------------------------------------------------------------------------


async def test_a_won_dispute_withdraws_then_reinstates(processor: SimulatedProcessor) -> None:
    reference = await succeeded_charge(processor, "k1", 1000)
    created = await processor.create_dispute(reference)
    event = processor.parse_webhook(created.payload, created.headers)
    assert (event.type, event.processor_reference, event.donation_id, event.amount, event.fee) == (
        EventType.DISPUTE_CREATED,
        reference,
        "don_k1",
        Money(1000, USD),
        Money(1500, USD),
    )
    assert event.object_id == created.object_id
    refused = await processor.refund(refund_request("r1", reference, 100))
    assert refused.status is RefundStatus.FAILED and "disputed" in (refused.message or "")
    with pytest.raises(SimulatorError):
        await processor.create_dispute(reference)
    closed = await processor.close_dispute(created.object_id, won=True)
    won = processor.parse_webhook(closed.payload, closed.headers)
    assert (won.type, won.processor_reference, won.amount) == (EventType.DISPUTE_WON, reference, Money(1000, USD))
    with pytest.raises(SimulatorError):
        await processor.close_dispute(created.object_id, won=False)
    disputes = [
        (t.amount.amount_minor, t.fee.amount_minor, t.donation_id)
        for t in await processor.balance_transactions(FAR_PAST, FAR_FUTURE)
        if t.type is BalanceTransactionType.DISPUTE
    ]
    assert disputes == [(-1000, 1500, "don_k1"), (1000, 0, "don_k1")]


async def test_a_lost_partial_dispute_keeps_the_funds_withdrawn(processor: SimulatedProcessor) -> None:
    reference = await succeeded_charge(processor, "k1", 1000)
    await processor.refund(refund_request("r1", reference, 400))
    with pytest.raises(SimulatorError):
        await processor.create_dispute(reference, Money(601, USD))  # more than is left after the refund
    created = await processor.create_dispute(reference, Money(500, USD), fee_minor=2000)
    closed = await processor.close_dispute(created.object_id, won=False)
    assert processor.parse_webhook(closed.payload, closed.headers).type is EventType.DISPUTE_LOST
    disputes = [
        (t.amount.amount_minor, t.fee.amount_minor)
        for t in await processor.balance_transactions(FAR_PAST, FAR_FUTURE)
        if t.type is BalanceTransactionType.DISPUTE
    ]
    assert disputes == [(-500, 2000)]


async def test_a_payout_empties_the_balance(processor: SimulatedProcessor) -> None:
    assert await processor.pay_out() is None
    first = await succeeded_charge(processor, "k1", 1000)  # net 948
    await succeeded_charge(processor, "k2", 5000)  # net 4860
    await processor.refund(refund_request("r1", first, 300))
    webhook = await processor.pay_out()
    assert webhook is not None
    event = processor.parse_webhook(webhook.payload, webhook.headers)
    assert (event.type, event.amount, event.object_id) == (
        EventType.PAYOUT_PAID,
        Money(948 + 4860 - 300, USD),
        webhook.object_id,
    )
    transactions = await processor.balance_transactions(FAR_PAST, FAR_FUTURE)
    assert sum(t.amount.amount_minor - t.fee.amount_minor for t in transactions) == 0
    assert await processor.pay_out() is None


async def test_pending_charges_settle_by_webhook(processor: SimulatedProcessor) -> None:
    pending = await processor.charge(charge_request("k1", payment_method="pm_card_authenticationRequired"))
    assert pending.status is ChargeStatus.PENDING and "requires_action" in (pending.message or "")
    assert pending.processor_reference is not None
    succeeded = await processor.resolve_pending(pending.processor_reference, succeeded=True)
    event = processor.parse_webhook(succeeded.payload, succeeded.headers)
    assert (event.type, event.processor_reference, event.fee) == (
        EventType.CHARGE_SUCCEEDED,
        pending.processor_reference,
        Money(52, USD),
    )
    assert (await processor.lookup("k1", None)).status is ChargeStatus.SUCCEEDED
    with pytest.raises(SimulatorError):
        await processor.resolve_pending(pending.processor_reference, succeeded=False)
    abandoned = await processor.charge(charge_request("k2", payment_method="pm_card_threeDSecureRequired"))
    assert abandoned.processor_reference is not None
    failed = await processor.resolve_pending(abandoned.processor_reference, succeeded=False)
    assert processor.parse_webhook(failed.payload, failed.headers).type is EventType.CHARGE_FAILED
    assert (await processor.lookup("k2", None)).status is ChargeStatus.DECLINED
    [transaction] = await processor.balance_transactions(FAR_PAST, FAR_FUTURE)
    assert (transaction.source_reference, transaction.amount, transaction.fee) == (
        pending.processor_reference,
        Money(1000, USD),
        Money(52, USD),
    )


async def test_forged_tampered_and_stale_webhooks_are_rejected(
    processor: SimulatedProcessor, pool: asyncpg.Pool
) -> None:
    reference = await succeeded_charge(processor, "k1")
    webhook = await processor.create_dispute(reference)
    tampered = webhook.payload.replace(b'"amount":1000', b'"amount":9000')
    assert tampered != webhook.payload
    forger = SimulatedProcessor(pool, SimulatedConfig(webhook_secret="whsec_forger"))
    now_s = int(datetime.now(UTC).timestamp())
    for payload, headers in (
        (tampered, webhook.headers),
        (webhook.payload, forger.signed_headers(webhook.payload)),
        (webhook.payload, processor.signed_headers(webhook.payload, now_s - 301)),
        (webhook.payload, {"Content-Type": "application/json"}),
        (webhook.payload, {SIGNATURE_HEADER: "t=1,v1=00"}),
    ):
        with pytest.raises(WebhookSignatureError):
            processor.parse_webhook(payload, headers)
    with pytest.raises(WebhookSignatureError):
        forger.parse_webhook(webhook.payload, webhook.headers)
    # A fresh signature over a redelivered event is accepted, with the same event id.
    redelivered = await processor.webhook(webhook.event_id)
    assert redelivered.payload == webhook.payload
    assert processor.parse_webhook(redelivered.payload, redelivered.headers).id == webhook.event_id


# ---- balance transactions ----------------------------------------------------------------------------------------


async def test_balance_transactions_match_the_record(processor: SimulatedProcessor) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    references = [await succeeded_charge(processor, f"k{n}", 1000 + n) for n in range(5)]
    await processor.charge(charge_request("declined", payment_method="pm_card_chargeDeclined"))
    refund = await processor.refund(refund_request("r1", references[0], 400))
    transactions = await processor.balance_transactions(started, datetime.now(UTC) + timedelta(seconds=1))
    charges = {c.reference: c for c in await processor.charges()}
    by_type: dict[BalanceTransactionType, list[BalanceTransaction]] = {}
    for t in transactions:
        by_type.setdefault(t.type, []).append(t)
    assert len(by_type[BalanceTransactionType.CHARGE]) == 5
    for t in transactions:
        if t.type is BalanceTransactionType.CHARGE:
            charge = charges[t.source_reference or ""]
            assert (t.amount, t.fee, t.donation_id) == (charge.amount, charge.fee, charge.donation_id)
    [refunded] = by_type[BalanceTransactionType.REFUND]
    assert (refunded.amount, refunded.fee, refunded.source_reference, refunded.donation_id) == (
        Money(-400, USD),
        Money(0, USD),
        refund.processor_reference,
        "don_k0",
    )
    assert transactions == sorted(transactions, key=lambda t: t.created)
    # The window is half-open and excludes what lies outside it.
    assert await processor.balance_transactions(started - timedelta(days=1), started) == []
    last = transactions[-1].created
    assert transactions[-1] not in await processor.balance_transactions(started, last)


async def test_balance_transactions_are_append_only(processor: SimulatedProcessor, pool: asyncpg.Pool) -> None:
    await succeeded_charge(processor, "k1")
    async with pool.acquire() as connection:
        for statement in (
            "UPDATE simulator.balance_transactions SET amount = 1",
            "DELETE FROM simulator.balance_transactions",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await connection.execute(statement)


async def test_the_memory_record_keeps_charges_off_the_database(pool: asyncpg.Pool) -> None:
    """SURGE_SIM_RECORD=memory (the throughput benchmark's): one charge per key, found by key or reference, nothing
    written to the database, and whatever it does not keep refused rather than pretended."""
    config = SimulatedConfig.from_environment({"SURGE_SIM_RECORD": "memory"})
    before = await pool.fetchval("SELECT count(*) FROM simulator.charges")
    async with SimulatedProcessor(pool, config, name="in-memory") as simulated:
        first = await simulated.charge(charge_request("mem-1"))
        again = await simulated.charge(charge_request("mem-1"))
        other = await simulated.charge(charge_request("mem-2", payment_method="pm_card_visa_chargeDeclined"))
        assert first.status is ChargeStatus.SUCCEEDED and first.processor_reference
        assert again.processor_reference == first.processor_reference
        assert other.status is ChargeStatus.DECLINED
        assert (await simulated.lookup("mem-1", None)).processor_reference == first.processor_reference
        assert (await simulated.lookup("unknown", first.processor_reference)).status is ChargeStatus.SUCCEEDED
        assert (await simulated.lookup("unknown", None)).status is ChargeStatus.NOT_FOUND
        assert [c.idempotency_key for c in await simulated.charges()] == ["mem-1", "mem-2"]
        refund = await simulated.refund(refund_request("mem-r", first.processor_reference or "", 100))
        assert refund.status is RefundStatus.FAILED and "in-memory" in (refund.message or "")
        with pytest.raises(SimulatorError, match="in-memory"):
            await simulated.create_dispute(first.processor_reference or "")
    assert await pool.fetchval("SELECT count(*) FROM simulator.charges") == before


def test_the_record_setting_names_its_choices() -> None:
    with pytest.raises(Exception, match="SURGE_SIM_RECORD"):
        SimulatedConfig.from_environment({"SURGE_SIM_RECORD": "disk"})
