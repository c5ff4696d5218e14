"""Matching both sides subject by subject, and the payout balance check (pure: no I/O)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from adapters.base import BalanceTransactionType
from engine.finance.reconcile.model import (
    BALANCE_SUBJECT_PREFIX,
    CurrencyTotals,
    Discrepancy,
    ExceptionKind,
    LedgerItem,
    ProcessorItem,
    Reconciliation,
    Window,
)


@dataclass(slots=True)
class _Side:
    gross: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fee: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def currencies(self) -> set[str]:
        return {c for c in set(self.gross) | set(self.fee) if self.gross.get(c, 0) or self.fee.get(c, 0)}


def reconcile(
    window: Window,
    processor_items: Sequence[ProcessorItem],
    ledger_items: Sequence[LedgerItem],
    *,
    opening_clearing: Mapping[str, int] | None = None,
) -> Reconciliation:
    """Match both sides for the subjects anchored in ``window``.

    ``opening_clearing`` (per currency, the ledger's clearing balance from entries before ``window.read_from``) turns
    on the payout balance check, for processors that pay out their whole balance; leave it None for the others.
    """
    by_subject_processor: dict[str, list[ProcessorItem]] = defaultdict(list)
    by_subject_ledger: dict[str, list[LedgerItem]] = defaultdict(list)
    for p in processor_items:
        by_subject_processor[p.subject].append(p)
    for item in ledger_items:
        if not item.subject.startswith(BALANCE_SUBJECT_PREFIX):
            by_subject_ledger[item.subject].append(item)
    result = Reconciliation(window)
    for subject in sorted(set(by_subject_processor) | set(by_subject_ledger)):
        p_items, l_items = by_subject_processor.get(subject, []), by_subject_ledger.get(subject, [])
        anchor = min(p.created for p in p_items) if p_items else min(x.effective_at for x in l_items)
        if not window.holds(anchor):
            continue
        _add_totals(result.totals, p_items, l_items)
        found = _compare(subject, anchor, p_items, l_items)
        if found:
            result.discrepancies.extend(found)
        else:
            result.matched.append(subject)
    if opening_clearing is not None:
        result.discrepancies.extend(_payout_balances(window, processor_items, ledger_items, opening_clearing))
    result.discrepancies.sort(key=lambda d: (d.occurred_at, d.subject, d.kind.value))
    return result


def _add_totals(totals: dict[str, CurrencyTotals], p_items: list[ProcessorItem], l_items: list[LedgerItem]) -> None:
    for p in p_items:
        line = totals.setdefault(p.currency, CurrencyTotals())
        line.processor_fees += p.fee
        if p.type is BalanceTransactionType.CHARGE:
            line.processor_charges += p.amount
        elif p.type is BalanceTransactionType.REFUND:
            line.processor_refunds += p.amount
        elif p.type is BalanceTransactionType.DISPUTE:
            line.processor_disputes += p.amount
        elif p.type is BalanceTransactionType.PAYOUT:
            line.processor_payouts += p.amount
        else:
            line.processor_other += p.amount
    for item in l_items:
        line = totals.setdefault(item.currency, CurrencyTotals())
        line.ledger_clearing_movement += item.clearing
        if item.subject.startswith("payout:"):
            line.ledger_payouts += item.clearing


def _compare(
    subject: str, anchor: datetime, p_items: list[ProcessorItem], l_items: list[LedgerItem]
) -> list[Discrepancy]:
    processor, ledger = _Side(), _Side()
    for p in p_items:
        processor.gross[p.currency] += p.amount
        processor.fee[p.currency] += p.fee
    for item in l_items:
        ledger.gross[item.currency] += item.clearing + item.fee
        ledger.fee[item.currency] += item.fee
    base = Discrepancy(
        ExceptionKind.AMOUNT_MISMATCH,
        subject,
        None,
        anchor,
        processor_ids=tuple(p.id for p in p_items),
        ledger_references=tuple(dict.fromkeys(x.reference for x in l_items)),
        donation_id=next(
            (d for d in [*(p.donation_id for p in p_items), *(x.donation_id for x in l_items)] if d), None
        ),
    )
    p_currencies, l_currencies = processor.currencies(), ledger.currencies()
    if not p_items and not l_currencies:
        return []  # ledger entries that cancel out (an entry and its adjustment): nothing is owed either way
    if not l_items:
        return [
            replace(
                base,
                kind=ExceptionKind.MISSING_IN_LEDGER,
                currency=currency,
                processor_gross=processor.gross[currency],
                processor_fee=processor.fee[currency],
            )
            for currency in sorted(set(processor.gross))
        ]
    if not p_items:
        return [
            replace(
                base,
                kind=ExceptionKind.MISSING_AT_PROCESSOR,
                currency=currency,
                ledger_gross=ledger.gross[currency],
                ledger_fee=ledger.fee[currency],
            )
            for currency in sorted(l_currencies)
        ]
    # Both sides moved money, in different currencies. (One side netting to zero is an amount difference.)
    if p_currencies and l_currencies and p_currencies != l_currencies:
        both = sorted(p_currencies | l_currencies)
        note = f"processor {'/'.join(sorted(p_currencies))}, ledger {'/'.join(sorted(l_currencies))}"
        return [
            replace(
                base,
                kind=ExceptionKind.CURRENCY_MISMATCH,
                currency=both[0] if len(both) == 1 else None,
                note=note,
            )
        ]
    found = []
    for currency in sorted(p_currencies | l_currencies):
        amounts = replace(
            base,
            currency=currency,
            processor_gross=processor.gross.get(currency, 0),
            processor_fee=processor.fee.get(currency, 0),
            ledger_gross=ledger.gross.get(currency, 0),
            ledger_fee=ledger.fee.get(currency, 0),
        )
        if amounts.processor_gross != amounts.ledger_gross:
            found.append(amounts)
        if amounts.processor_fee != amounts.ledger_fee:
            found.append(replace(amounts, kind=ExceptionKind.FEE_MISMATCH))
    return found


def _processor_time(item: LedgerItem, times: Mapping[str, list[datetime]]) -> datetime:
    """When the processor did what ``item`` records: its latest transaction for the subject not after the entry."""
    candidates = times.get(item.subject)
    if not candidates:
        return item.effective_at
    before = [t for t in candidates if t <= item.effective_at]
    return max(before) if before else min(candidates)


def _payout_balances(
    window: Window,
    processor_items: Sequence[ProcessorItem],
    ledger_items: Sequence[LedgerItem],
    opening_clearing: Mapping[str, int],
) -> list[Discrepancy]:
    times: dict[str, list[datetime]] = defaultdict(list)
    for p in processor_items:
        times[p.subject].append(p.created)
    placed = [(_processor_time(item, times), item) for item in ledger_items]
    found = []
    for payout in processor_items:
        if payout.type is not BalanceTransactionType.PAYOUT or payout.amount >= 0 or not window.holds(payout.created):
            continue
        expected = opening_clearing.get(payout.currency, 0) + sum(
            item.clearing
            for moment, item in placed
            if item.currency == payout.currency and item.subject != payout.subject and moment < payout.created
        )
        paid = -payout.amount + payout.fee
        if expected != paid:
            found.append(
                Discrepancy(
                    ExceptionKind.PAYOUT_BALANCE_MISMATCH,
                    subject=BALANCE_SUBJECT_PREFIX + payout.subject,
                    currency=payout.currency,
                    occurred_at=payout.created,
                    processor_gross=paid,
                    ledger_gross=expected,
                    processor_ids=(payout.id,),
                    note="the payout is the processor's whole balance; the ledger's clearing balance before it differs",
                )
            )
    return found
