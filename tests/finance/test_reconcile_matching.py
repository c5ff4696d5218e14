"""Worked reconciliation scenarios on the pure matcher: each side built by hand, amounts checked to the cent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.base import BalanceTransaction, BalanceTransactionType
from engine.finance.reconcile.adjustments import AdjustmentUnavailableError, proposed_legs
from engine.finance.reconcile.matching import reconcile
from engine.finance.reconcile.model import ExceptionKind, LedgerItem, ProcessorItem, Window
from engine.finance.reconcile.subjects import entry_subject, processor_item
from ledger.entries import Leg
from ledger.money import Money

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = Window(T0, T0 + timedelta(hours=1), slack=timedelta(minutes=10))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def txn(
    id: str, kind: BalanceTransactionType, amount: int, fee: int, minutes: float, source: str, donation: str | None
) -> ProcessorItem:
    return processor_item(
        BalanceTransaction(id, kind, Money(amount, "USD"), Money(fee, "USD"), at(minutes), source, donation)
    )


def entry(
    entry_id: int, reference: str, clearing: int, fee: int, minutes: float, donation: str | None = None
) -> LedgerItem:
    metadata = {"donation": donation} if donation else {}
    subject = entry_subject("simulated", reference, metadata)
    return LedgerItem(entry_id, reference, subject, "USD", clearing, fee, at(minutes), donation)


def charge_both_sides(n: int, amount: int, fee: int, minutes: float) -> tuple[ProcessorItem, list[LedgerItem]]:
    donation = f"don_{n}"
    processor = txn(f"txn_{n}", BalanceTransactionType.CHARGE, amount, fee, minutes, f"pi_{n}", donation)
    # The ledger posts a few milliseconds after the processor answered.
    later = minutes + 0.001
    ledger = [
        entry(10 * n, donation, amount, 0, later, donation),
        entry(10 * n + 1, f"fee:{donation}", -fee, fee, later, donation),
    ]
    return processor, ledger


def test_agreeing_books_match_and_totals_tie_out() -> None:
    p1, l1 = charge_both_sides(1, 5_000, 175, 5)
    p2, l2 = charge_both_sides(2, 2_500, 103, 6)
    refund = txn("txn_r", BalanceTransactionType.REFUND, -1_000, 0, 7, "re_sim_1", "don_1")
    refund_entry = entry(30, "re_abc", -1_000, 0, 7.001, "don_1")
    result = reconcile(WINDOW, [p1, p2, refund], [*l1, *l2, refund_entry])
    assert result.discrepancies == []
    assert sorted(result.matched) == ["charge:don_1", "charge:don_2", "refund:don_1"]
    usd = result.totals["USD"]
    assert usd.processor_net_movement == 5_000 - 175 + 2_500 - 103 - 1_000 == usd.ledger_clearing_movement


def test_a_missing_ledger_entry_is_found_with_the_adjustment_that_books_it() -> None:
    p1, l1 = charge_both_sides(1, 5_000, 175, 5)
    orphan = txn("txn_9", BalanceTransactionType.CHARGE, 10_000, 320, 8, "pi_9", "don_9")
    result = reconcile(WINDOW, [p1, orphan], l1)
    [found] = result.discrepancies
    assert (found.kind, found.subject, found.currency) == (ExceptionKind.MISSING_IN_LEDGER, "charge:don_9", "USD")
    assert (found.processor_amount, found.ledger_amount, found.difference) == (10_000, None, 10_000)
    assert found.processor_ids == ("txn_9",) and found.donation_id == "don_9"
    legs = proposed_legs(
        found,
        clearing_account="clearing:simulated:USD",
        fees_account="fees:simulated:USD",
        counter_account="contributions:demo",
    )
    assert legs == (
        Leg("clearing:simulated:USD", 9_680, "USD"),
        Leg("fees:simulated:USD", 320, "USD"),
        Leg("contributions:demo", -10_000, "USD"),
    )


def test_a_fee_mismatch_is_found_and_only_the_fee_is_adjusted() -> None:
    processor, ledger = charge_both_sides(1, 5_000, 175, 5)
    wrong_fee = [ledger[0], entry(11, "fee:don_1", -145, 145, 5.001, "don_1")]
    [found] = reconcile(WINDOW, [processor], wrong_fee).discrepancies
    assert found.kind is ExceptionKind.FEE_MISMATCH
    assert (found.processor_amount, found.ledger_amount, found.difference) == (175, 145, 30)
    legs = proposed_legs(
        found, clearing_account="clearing:s:USD", fees_account="fees:s:USD", counter_account="contributions:demo"
    )
    assert legs == (Leg("clearing:s:USD", -30, "USD"), Leg("fees:s:USD", 30, "USD"))


def test_a_fee_entry_never_posted_is_a_fee_mismatch_not_an_amount_one() -> None:
    processor, ledger = charge_both_sides(1, 5_000, 175, 5)
    [found] = reconcile(WINDOW, [processor], ledger[:1]).discrepancies
    assert (found.kind, found.processor_amount, found.ledger_amount) == (ExceptionKind.FEE_MISMATCH, 175, 0)


def test_a_payout_that_does_not_match_is_found_twice_over() -> None:
    p1, l1 = charge_both_sides(1, 5_000, 175, 5)
    orphan = txn("txn_9", BalanceTransactionType.CHARGE, 10_000, 320, 8, "pi_9", "don_9")
    # The processor paid out its whole balance, the missed charge included; the ledger booked a different amount.
    payout = txn("txn_po", BalanceTransactionType.PAYOUT, -(4_825 + 9_680), 0, 30, "po_1", None)
    booked = entry(50, "payout:simulated:po_1", -4_825, 0, 30.5)
    result = reconcile(WINDOW, [p1, orphan, payout], [*l1, booked], opening_clearing={})
    kinds = {(d.kind, d.subject): d for d in result.discrepancies}
    amount = kinds[(ExceptionKind.AMOUNT_MISMATCH, "payout:po_1")]
    assert (amount.processor_amount, amount.ledger_amount, amount.difference) == (-14_505, -4_825, -9_680)
    balance = kinds[(ExceptionKind.PAYOUT_BALANCE_MISMATCH, "balance:payout:po_1")]
    # Before the payout the ledger's clearing account held only the first donation's net.
    assert (balance.processor_amount, balance.ledger_amount, balance.difference) == (14_505, 4_825, 9_680)
    assert (ExceptionKind.MISSING_IN_LEDGER, "charge:don_9") in kinds
    usd = result.totals["USD"]
    assert (usd.processor_payouts, usd.ledger_payouts) == (-14_505, -4_825)


def test_an_adjustment_placed_at_the_processor_time_clears_the_payout_balance() -> None:
    p1, l1 = charge_both_sides(1, 5_000, 175, 5)
    orphan = txn("txn_9", BalanceTransactionType.CHARGE, 10_000, 320, 8, "pi_9", "don_9")
    payout = txn("txn_po", BalanceTransactionType.PAYOUT, -14_505, 0, 30, "po_1", None)
    booked = entry(50, "payout:simulated:po_1", -14_505, 0, 30.5)
    adjustment = LedgerItem(60, "reconcile:simulated:1", "charge:don_9", "USD", 9_680, 320, at(8), "don_9")
    result = reconcile(WINDOW, [p1, orphan, payout], [*l1, booked, adjustment], opening_clearing={})
    assert result.discrepancies == []


def test_the_payout_balance_counts_what_the_ledger_held_before_the_window() -> None:
    payout = txn("txn_po", BalanceTransactionType.PAYOUT, -7_000, 0, 30, "po_1", None)
    booked = entry(50, "payout:simulated:po_1", -7_000, 0, 30.2)
    assert reconcile(WINDOW, [payout], [booked], opening_clearing={"USD": 7_000}).discrepancies == []
    [found] = reconcile(WINDOW, [payout], [booked], opening_clearing={"USD": 6_000}).discrepancies
    assert found.kind is ExceptionKind.PAYOUT_BALANCE_MISMATCH
    # Processors that do not sweep their balance are not checked this way.
    assert reconcile(WINDOW, [payout], [booked]).discrepancies == []


def test_entries_without_a_processor_transaction_and_amount_mismatches() -> None:
    phantom = entry(1, "don_7", 3_000, 0, 10, "don_7")
    processor, ledger = charge_both_sides(2, 5_000, 175, 5)
    short = [entry(20, "don_2", 4_000, 0, 5.001, "don_2"), ledger[1]]
    result = reconcile(WINDOW, [processor], [phantom, *short])
    kinds = {d.kind: d for d in result.discrepancies}
    assert kinds[ExceptionKind.MISSING_AT_PROCESSOR].ledger_amount == 3_000
    assert kinds[ExceptionKind.AMOUNT_MISMATCH].difference == 1_000


def test_disputes_match_across_withdrawal_fee_and_reinstatement() -> None:
    withdrawn = txn("txn_d1", BalanceTransactionType.DISPUTE, -5_000, 1_500, 10, "dp_1", "don_1")
    reinstated = txn("txn_d2", BalanceTransactionType.DISPUTE, 5_000, 0, 20, "dp_1", "don_1")
    ledger = [
        entry(1, "dispute:dp_1", -5_000, 0, 10.01, "don_1"),
        entry(2, "dispute-fee:dp_1", -1_500, 1_500, 10.01, "don_1"),
        entry(3, "dispute-won:dp_1", 5_000, 0, 20.01),
    ]
    result = reconcile(WINDOW, [withdrawn, reinstated], ledger)
    assert result.discrepancies == [] and result.matched == ["dispute:dp_1"]
    [fee] = reconcile(WINDOW, [withdrawn, reinstated], ledger[::2]).discrepancies
    assert (fee.kind, fee.processor_amount, fee.ledger_amount) == (ExceptionKind.FEE_MISMATCH, 1_500, 0)


def test_currency_mismatch_needs_a_hand_written_adjustment() -> None:
    processor = txn("txn_1", BalanceTransactionType.CHARGE, 5_000, 0, 5, "pi_1", "don_1")
    euro = LedgerItem(1, "don_1", "charge:don_1", "EUR", 5_000, 0, at(5.001), "don_1")
    [found] = reconcile(WINDOW, [processor], [euro]).discrepancies
    assert found.kind is ExceptionKind.CURRENCY_MISMATCH and found.currency is None
    with pytest.raises(AdjustmentUnavailableError):
        proposed_legs(found, clearing_account="c", fees_account="f", counter_account="x")


def test_subjects_belong_to_the_window_of_their_processor_time() -> None:
    # Charged a second before the window, posted a second into it: the previous window's business, not this one's.
    before = txn("txn_1", BalanceTransactionType.CHARGE, 5_000, 0, -1 / 60, "pi_1", "don_1")
    posted = entry(1, "don_1", 5_000, 0, 1 / 60, "don_1")
    result = reconcile(WINDOW, [before], [posted])
    assert result.matched == [] and result.discrepancies == []
    previous = Window(T0 - timedelta(hours=1), T0, slack=timedelta(minutes=10))
    assert reconcile(previous, [before], [posted]).matched == ["charge:don_1"]


def test_the_same_books_give_the_same_digest_and_keys() -> None:
    p1, l1 = charge_both_sides(1, 5_000, 175, 5)
    orphan = txn("txn_9", BalanceTransactionType.CHARGE, 10_000, 320, 8, "pi_9", "don_9")
    first = reconcile(WINDOW, [p1, orphan], l1)
    again = reconcile(WINDOW, [orphan, p1], list(reversed(l1)))
    assert first.digest() == again.digest()
    assert [d.key for d in first.discrepancies] == [d.key for d in again.discrepancies]
    assert reconcile(WINDOW, [p1], l1).digest() != first.digest()


def test_a_window_must_be_ordered_and_zone_aware() -> None:
    with pytest.raises(ValueError):
        Window(T0, T0)
    with pytest.raises(ValueError):
        Window(T0.replace(tzinfo=None), T0.replace(tzinfo=None) + timedelta(hours=1))
