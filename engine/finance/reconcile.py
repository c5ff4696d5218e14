"""Reconciliation: the ledger against a processor's own record of its balance, subject by subject.

Both sides are grouped into *subjects*, the things both of them are about:

=====================  ==========================================  ================================================
subject                processor balance transactions              ledger entries (by reference)
=====================  ==========================================  ================================================
``charge:<donation>``  the charge (amount, fee)                    ``don_…`` and ``fee:don_…``
``refund:<donation>``  every refund of that donation               the refunds (``re_…``, metadata donation)
``dispute:<id>``       withdrawal (with its fee), reinstatement    ``dispute:``, ``dispute-fee:``, ``dispute-won:``
``payout:<id>``        the payout                                  ``payout:<processor>:<id>``
=====================  ==========================================  ================================================

On the ledger side only postings on the processor's clearing and fee accounts count: an entry's *clearing* is the
signed sum of its clearing postings (money the processor holds for us), its *fee* the sum on the fee accounts. The
processor's gross for a subject is the sum of its transactions' amounts; the ledger's is clearing + fee. Worked
example, a $50.00 donation with a $1.75 fee whose fee entry was never posted::

    processor  txn_1  charge  amount 5000  fee 175              gross 5000, fee 175
    ledger     don_1  clearing +5000 (contributions -5000)      gross 5000 + 0 = 5000, fee 0
                                                                → fee_mismatch, processor 175, ledger 0

The proposed adjustment makes the ledger's clearing and fee for the subject equal to the processor's: clearing
moves by Δgross - Δfee, the fee account by Δfee and the subject's own account (contributions, refunds, disputes or
bank) by -Δgross — here clearing -175, fees +175. Adjustments carry the subject in their metadata
(``reconciliation_subject``) and take effect at the subject's time, so the next run counts them and finds the
subject matched.

Windows: subjects belong to the run whose window holds their *anchor*, the earliest processor time (the ledger's
when the processor has nothing). Both sides are read over the window widened by a slack on each side, so that a
ledger entry posted moments after its charge is still paired with it at the window's edges.

Payouts of a processor that pays out its whole balance (the simulated one) are also checked against the clearing
account: the ledger's clearing balance just before the payout (ledger entries placed at their processor time) must
equal the amount paid out. A charge the ledger missed weeks ago, outside any window read since, still shows here.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
import orjson

from adapters.base import BalanceTransaction, BalanceTransactionType
from ledger.accounts import AccountDirectory
from ledger.entries import EntryKind, EntryOutcome, EntryRequest, Leg
from ledger.posting import post_entries

SUBJECT_METADATA_KEY = "reconciliation_subject"
# Subjects of balance-level adjustments: counted in clearing balances, never matched against a transaction.
BALANCE_SUBJECT_PREFIX = "balance:"


class ExceptionKind(StrEnum):
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_AT_PROCESSOR = "missing_at_processor"
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    FEE_MISMATCH = "fee_mismatch"
    PAYOUT_BALANCE_MISMATCH = "payout_balance_mismatch"  # a sweep payout is not the ledger's clearing balance


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    slack: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a reconciliation window needs time-zone-aware times")
        if not self.start < self.end:
            raise ValueError(f"the window must start before it ends ({self.start} .. {self.end})")
        if self.slack < timedelta(0):
            raise ValueError("slack cannot be negative")

    @property
    def read_from(self) -> datetime:
        return self.start - self.slack

    @property
    def read_to(self) -> datetime:
        return self.end + self.slack

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True, slots=True)
class ProcessorItem:
    id: str
    type: BalanceTransactionType
    subject: str
    currency: str
    amount: int  # signed, as the processor's balance moves
    fee: int
    created: datetime
    donation_id: str | None


@dataclass(frozen=True, slots=True)
class LedgerItem:
    """One entry's postings on the processor's clearing and fee accounts, in one currency."""

    entry_id: int
    reference: str
    subject: str
    currency: str
    clearing: int
    fee: int
    effective_at: datetime
    donation_id: str | None


@dataclass(frozen=True, slots=True)
class Discrepancy:
    kind: ExceptionKind
    subject: str
    currency: str | None  # None for a currency mismatch spanning several
    occurred_at: datetime
    processor_gross: int | None = None  # None: the processor has nothing for the subject
    processor_fee: int | None = None
    ledger_gross: int | None = None  # None: the ledger has nothing for the subject
    ledger_fee: int | None = None
    processor_ids: tuple[str, ...] = ()
    ledger_references: tuple[str, ...] = ()
    donation_id: str | None = None
    note: str = ""

    @property
    def processor_amount(self) -> int | None:
        return self.processor_fee if self.kind is ExceptionKind.FEE_MISMATCH else self.processor_gross

    @property
    def ledger_amount(self) -> int | None:
        return self.ledger_fee if self.kind is ExceptionKind.FEE_MISMATCH else self.ledger_gross

    @property
    def difference(self) -> int | None:
        """Processor minus ledger, in the kind's own terms (gross, or fee for a fee mismatch)."""
        if self.processor_amount is None and self.ledger_amount is None:
            return None
        return (self.processor_amount or 0) - (self.ledger_amount or 0)

    @property
    def key(self) -> str:
        """Identity across runs: the same discrepancy found again is the same exception."""
        amounts = (self.processor_gross, self.processor_fee, self.ledger_gross, self.ledger_fee)
        return "|".join(
            [self.kind.value, self.subject, self.currency or "*", *("-" if a is None else str(a) for a in amounts)]
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "subject": self.subject,
            "currency": self.currency,
            "processor_amount": self.processor_amount,
            "ledger_amount": self.ledger_amount,
            "difference": self.difference,
            "processor_gross": self.processor_gross,
            "processor_fee": self.processor_fee,
            "ledger_gross": self.ledger_gross,
            "ledger_fee": self.ledger_fee,
            "processor_ids": list(self.processor_ids),
            "ledger_references": list(self.ledger_references),
            "donation": self.donation_id,
            "note": self.note,
        }


@dataclass(slots=True)
class CurrencyTotals:
    """One currency's totals over the run's subjects: what the processor did and how the ledger's clearing moved."""

    processor_charges: int = 0
    processor_refunds: int = 0
    processor_disputes: int = 0
    processor_payouts: int = 0
    processor_other: int = 0
    processor_fees: int = 0
    ledger_payouts: int = 0
    ledger_clearing_movement: int = 0

    @property
    def processor_net_movement(self) -> int:
        gross = (
            self.processor_charges
            + self.processor_refunds
            + self.processor_disputes
            + self.processor_payouts
            + self.processor_other
        )
        return gross - self.processor_fees

    def as_json(self) -> dict[str, int]:
        return {
            "processor_charges": self.processor_charges,
            "processor_refunds": self.processor_refunds,
            "processor_disputes": self.processor_disputes,
            "processor_payouts": self.processor_payouts,
            "processor_other": self.processor_other,
            "processor_fees": self.processor_fees,
            "processor_net_movement": self.processor_net_movement,
            "ledger_payouts": self.ledger_payouts,
            "ledger_clearing_movement": self.ledger_clearing_movement,
            "payouts_difference": self.processor_payouts - self.ledger_payouts,
            "movement_difference": self.processor_net_movement - self.ledger_clearing_movement,
        }


@dataclass(slots=True)
class Reconciliation:
    window: Window
    matched: list[str] = field(default_factory=list)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    totals: dict[str, CurrencyTotals] = field(default_factory=dict)

    def digest(self) -> bytes:
        content = "\n".join(sorted(self.matched)) + "\n--\n" + "\n".join(sorted(d.key for d in self.discrepancies))
        return hashlib.blake2b(content.encode(), digest_size=16).digest()

    def summary(self) -> dict[str, Any]:
        return {currency: totals.as_json() for currency, totals in sorted(self.totals.items())}


# ---- subjects ----------------------------------------------------------------------------------------------------


def transaction_subject(transaction: BalanceTransaction) -> str:
    kind, source = transaction.type, transaction.source_reference or transaction.id
    if kind is BalanceTransactionType.CHARGE:
        return f"charge:{transaction.donation_id or source}"
    if kind is BalanceTransactionType.REFUND:
        return f"refund:{transaction.donation_id or source}"
    if kind is BalanceTransactionType.DISPUTE:
        return f"dispute:{source}"
    if kind is BalanceTransactionType.PAYOUT:
        return f"payout:{source}"
    return f"other:{transaction.id}"


def processor_item(transaction: BalanceTransaction) -> ProcessorItem:
    if transaction.fee.currency != transaction.amount.currency:
        raise ValueError(f"balance transaction {transaction.id} has its fee in another currency")
    return ProcessorItem(
        transaction.id,
        transaction.type,
        transaction_subject(transaction),
        transaction.amount.currency,
        transaction.amount.amount_minor,
        transaction.fee.amount_minor,
        transaction.created,
        transaction.donation_id,
    )


def entry_subject(processor: str, reference: str, metadata: Mapping[str, Any]) -> str:
    """The subject of a ledger entry, from the engine's reference conventions (see engine/chart_of_accounts.py)."""
    tagged = metadata.get(SUBJECT_METADATA_KEY)
    if isinstance(tagged, str) and tagged:
        return tagged
    for prefix in ("dispute-fee:", "dispute-won:", "dispute:"):
        if reference.startswith(prefix):
            return "dispute:" + reference[len(prefix) :]
    if reference.startswith(f"payout:{processor}:"):
        return "payout:" + reference[len(f"payout:{processor}:") :]
    if reference.startswith("fee:"):
        return "charge:" + reference[len("fee:") :]
    if reference.startswith("don_"):
        return "charge:" + reference
    donation = metadata.get("donation")
    if reference.startswith("re_") and isinstance(donation, str):
        return "refund:" + donation
    return "entry:" + reference


# ---- matching (pure) ---------------------------------------------------------------------------------------------


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


# ---- adjustments (pure) -----------------------------------------------------------------------------------------


class AdjustmentUnavailableError(ValueError):
    """No adjustment can be proposed for this exception: the caller must give the legs."""


def proposed_legs(
    discrepancy: Discrepancy, *, clearing_account: str, fees_account: str, counter_account: str | None
) -> tuple[Leg, ...]:
    """The legs that make the ledger's clearing and fee for the subject equal to the processor's."""
    if discrepancy.kind in (ExceptionKind.CURRENCY_MISMATCH, ExceptionKind.PAYOUT_BALANCE_MISMATCH):
        raise AdjustmentUnavailableError(f"a {discrepancy.kind.value} needs an adjustment written by hand")
    if discrepancy.currency is None:
        raise AdjustmentUnavailableError("the exception spans several currencies")
    gross = (discrepancy.processor_gross or 0) - (discrepancy.ledger_gross or 0)
    fee = (discrepancy.processor_fee or 0) - (discrepancy.ledger_fee or 0)
    if gross and counter_account is None:
        raise AdjustmentUnavailableError(f"no account is known to balance {discrepancy.subject}")
    amounts = [(clearing_account, gross - fee), (fees_account, fee), (counter_account or "", -gross)]
    legs = tuple(Leg(account, amount, discrepancy.currency) for account, amount in amounts if amount)
    if not legs:
        raise AdjustmentUnavailableError("the exception has no difference to adjust")
    return legs


# ---- the database ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountPrefixes:
    """The processor's accounts, by code prefix (codes end with the currency): ``clearing:<p>:``, ``fees:<p>:``."""

    clearing: str
    fees: str


async def load_ledger_items(
    connection: asyncpg.Connection, processor: str, accounts: AccountPrefixes, window: Window
) -> list[LedgerItem]:
    rows = await connection.fetch(
        """SELECT e.id, e.reference, e.effective_at, e.metadata::text AS metadata, p.currency,
                  sum(p.amount) FILTER (WHERE starts_with(a.code, $1))::bigint AS clearing,
                  sum(p.amount) FILTER (WHERE starts_with(a.code, $2))::bigint AS fee
             FROM ledger.entries e
             JOIN ledger.postings p ON p.entry_id = e.id AND NOT p.pending
             JOIN ledger.accounts a ON a.id = p.account_id
            WHERE e.effective_at >= $3 AND e.effective_at < $4
              AND (starts_with(a.code, $1) OR starts_with(a.code, $2))
            GROUP BY e.id, p.currency
            ORDER BY e.id""",
        accounts.clearing,
        accounts.fees,
        window.read_from,
        window.read_to,
    )
    items = []
    for row in rows:
        metadata = _json(row["metadata"])
        donation = metadata.get("donation")
        items.append(
            LedgerItem(
                row["id"],
                row["reference"],
                entry_subject(processor, row["reference"], metadata),
                row["currency"].strip(),
                row["clearing"] or 0,
                row["fee"] or 0,
                row["effective_at"],
                donation if isinstance(donation, str) else None,
            )
        )
    return items


async def opening_clearing(
    connection: asyncpg.Connection, accounts: AccountPrefixes, before: datetime
) -> dict[str, int]:
    rows = await connection.fetch(
        """SELECT p.currency, sum(p.amount)::bigint AS total
             FROM ledger.postings p
             JOIN ledger.accounts a ON a.id = p.account_id
             JOIN ledger.entries e ON e.id = p.entry_id
            WHERE starts_with(a.code, $1) AND NOT p.pending AND e.effective_at < $2
            GROUP BY p.currency""",
        accounts.clearing,
        before,
    )
    return {row["currency"].strip(): row["total"] for row in rows}


@dataclass(frozen=True, slots=True)
class RecordedRun:
    id: int
    exception_ids: dict[str, int]  # discrepancy key → exception id


async def record_run(
    connection: asyncpg.Connection,
    processor: str,
    result: Reconciliation,
    *,
    requested_by: str,
    started_at: datetime,
    extra_detail: Mapping[str, Mapping[str, Any]] | None = None,
) -> RecordedRun:
    """Record the run, upsert its exceptions by key, and clear the open ones in its window it did not find."""
    extra_detail = extra_detail or {}
    async with connection.transaction():
        run_id = await connection.fetchval(
            """INSERT INTO ledger.reconciliation_runs (processor, window_from, window_to, slack_s, requested_by,
                   started_at, matched, exception_count, summary, result_digest)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10) RETURNING id""",
            processor,
            result.window.start,
            result.window.end,
            int(result.window.slack.total_seconds()),
            requested_by,
            started_at,
            len(result.matched),
            len(result.discrepancies),
            orjson.dumps(result.summary()).decode(),
            result.digest(),
        )
        found = result.discrepancies
        rows = await connection.fetch(
            """INSERT INTO ledger.reconciliation_exceptions AS x (processor, key, kind, subject, currency,
                   processor_amount, ledger_amount, occurred_at, detail, first_run_id, last_run_id)
               SELECT $1, d.key, d.kind, d.subject, d.currency, d.processor_amount, d.ledger_amount, d.occurred_at,
                      d.detail::jsonb, $2, $2
                 FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
                             $9::timestamptz[], $10::text[])
                      AS d(key, kind, subject, currency, processor_amount, ledger_amount, occurred_at, detail)
               ON CONFLICT (processor, key) DO UPDATE
                  SET last_run_id = EXCLUDED.last_run_id, cleared_run_id = NULL, detail = EXCLUDED.detail
               RETURNING x.id, x.key""",
            processor,
            run_id,
            [d.key for d in found],
            [d.kind.value for d in found],
            [d.subject for d in found],
            [d.currency for d in found],
            [d.processor_amount for d in found],
            [d.ledger_amount for d in found],
            [d.occurred_at for d in found],
            [_detail_json(d, extra_detail.get(d.key, {})) for d in found],
        )
        ids = {row["key"]: row["id"] for row in rows}
        await connection.execute(
            """INSERT INTO ledger.reconciliation_run_exceptions (run_id, exception_id)
               SELECT $1, unnest($2::bigint[])""",
            run_id,
            list(ids.values()),
        )
        await connection.execute(
            """UPDATE ledger.reconciliation_exceptions SET cleared_run_id = $2
                WHERE processor = $1 AND cleared_run_id IS NULL AND occurred_at >= $3 AND occurred_at < $4
                  AND id <> ALL($5::bigint[])""",
            processor,
            run_id,
            result.window.start,
            result.window.end,
            list(ids.values()),
        )
    return RecordedRun(run_id, ids)


def _json(text: str | None) -> dict[str, Any]:
    """JSON read as text (``::text``), so that it decodes the same whatever codecs the connection has."""
    value = orjson.loads(text) if text else {}
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _detail_json(discrepancy: Discrepancy, extra: Mapping[str, Any]) -> str:
    return orjson.dumps({**discrepancy.as_json(), **extra}).decode()


class ExceptionNotFoundError(LookupError):
    pass


class AlreadyResolvedError(Exception):
    def __init__(self, adjustment_id: int) -> None:
        super().__init__(f"resolved already by adjustment {adjustment_id}")
        self.adjustment_id = adjustment_id


class AdjustmentRefusedError(ValueError):
    """The ledger refused the adjusting entry (unknown account, unbalanced legs, ...)."""

    def __init__(self, outcome: EntryOutcome) -> None:
        super().__init__(f"the ledger refused the adjusting entry: {outcome.value}")
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class Adjustment:
    id: int
    exception_id: int
    entry_id: int
    entry_reference: str
    resolved_by: str
    resolved_at: datetime
    memo: str


def adjustment_reference(processor: str, exception_id: int) -> str:
    return f"reconcile:{processor}:{exception_id}"


async def resolve_exception(
    connection: asyncpg.Connection,
    directory: AccountDirectory,
    exception_id: int,
    legs: Iterable[Leg],
    *,
    memo: str,
    resolved_by: str,
) -> Adjustment:
    """Post the adjusting entry for an exception and record who resolved it, when and why — in one transaction.

    The entry takes effect at the exception's time (recorded now: ``recorded_at``), so reports and later runs over
    that time see the books as corrected."""
    memo = memo.strip()
    if not memo:
        raise ValueError("an adjustment needs a memo saying why")
    async with connection.transaction():
        row = await connection.fetchrow(
            """SELECT x.id, x.processor, x.subject, x.kind, x.occurred_at, x.detail::text AS detail,
                      a.id AS adjustment_id
                 FROM ledger.reconciliation_exceptions x
                 LEFT JOIN ledger.reconciliation_adjustments a ON a.exception_id = x.id
                WHERE x.id = $1 FOR UPDATE OF x""",
            exception_id,
        )
        if row is None:
            raise ExceptionNotFoundError(exception_id)
        if row["adjustment_id"] is not None:
            raise AlreadyResolvedError(row["adjustment_id"])
        # A balance-level adjustment lands just before the payout it explains, so that payout's check counts it.
        balance_level = row["kind"] == ExceptionKind.PAYOUT_BALANCE_MISMATCH.value
        effective_at = row["occurred_at"] - (timedelta(microseconds=1) if balance_level else timedelta(0))
        metadata: dict[str, Any] = {
            SUBJECT_METADATA_KEY: row["subject"],
            "reconciliation_exception": exception_id,
            "resolved_by": resolved_by,
        }
        donation = _json(row["detail"]).get("donation")
        if donation:
            metadata["donation"] = donation
        reference = adjustment_reference(row["processor"], exception_id)
        request = EntryRequest(
            reference, EntryKind.TRANSFER, tuple(legs), effective_at=effective_at, memo=memo, metadata=metadata
        )
        [posted] = await post_entries(connection, directory, [request])
        if posted.outcome is not EntryOutcome.CREATED or posted.entry_id is None:
            raise AdjustmentRefusedError(posted.outcome)
        adjustment = await connection.fetchrow(
            """INSERT INTO ledger.reconciliation_adjustments (exception_id, entry_id, resolved_by, memo)
               VALUES ($1, $2, $3, $4) RETURNING id, resolved_at""",
            exception_id,
            posted.entry_id,
            resolved_by,
            memo,
        )
    return Adjustment(
        adjustment["id"], exception_id, posted.entry_id, reference, resolved_by, adjustment["resolved_at"], memo
    )


# ---- reading runs and exceptions ------------------------------------------------------------------------------------


class ExceptionStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"  # an adjusting entry was posted for it
    CLEARED = "cleared"  # a later run over its time no longer found it


@dataclass(frozen=True, slots=True)
class ExceptionView:
    id: int
    processor: str
    kind: ExceptionKind
    subject: str
    currency: str | None
    processor_amount: int | None
    ledger_amount: int | None
    occurred_at: datetime
    detail: Mapping[str, Any]
    first_run_id: int
    last_run_id: int
    cleared_run_id: int | None
    adjustment: Adjustment | None

    @property
    def status(self) -> ExceptionStatus:
        if self.adjustment is not None:
            return ExceptionStatus.RESOLVED
        return ExceptionStatus.OPEN if self.cleared_run_id is None else ExceptionStatus.CLEARED

    @property
    def difference(self) -> int | None:
        if self.processor_amount is None and self.ledger_amount is None:
            return None
        return (self.processor_amount or 0) - (self.ledger_amount or 0)


@dataclass(frozen=True, slots=True)
class RunView:
    id: int
    processor: str
    window_from: datetime
    window_to: datetime
    slack_s: int
    requested_by: str
    started_at: datetime
    finished_at: datetime
    matched: int
    exception_count: int
    summary: Mapping[str, Any]
    result_digest: bytes
    same_result_as: int | None  # the latest earlier run of this window that found exactly the same
    exceptions: list[ExceptionView]


_EXCEPTION_COLUMNS = """x.id, x.processor, x.kind, x.subject, x.currency, x.processor_amount, x.ledger_amount,
       x.occurred_at, x.detail::text AS detail, x.first_run_id, x.last_run_id, x.cleared_run_id,
       a.id AS adjustment_id, a.entry_id, a.resolved_by, a.resolved_at, a.memo"""


def _exception_view(row: asyncpg.Record) -> ExceptionView:
    adjustment = None
    if row["adjustment_id"] is not None:
        adjustment = Adjustment(
            row["adjustment_id"],
            row["id"],
            row["entry_id"],
            adjustment_reference(row["processor"], row["id"]),
            row["resolved_by"],
            row["resolved_at"],
            row["memo"],
        )
    return ExceptionView(
        row["id"],
        row["processor"],
        ExceptionKind(row["kind"]),
        row["subject"],
        row["currency"].strip() if row["currency"] else None,
        row["processor_amount"],
        row["ledger_amount"],
        row["occurred_at"],
        _json(row["detail"]),
        row["first_run_id"],
        row["last_run_id"],
        row["cleared_run_id"],
        adjustment,
    )


async def exception_view(connection: asyncpg.Connection, exception_id: int) -> ExceptionView | None:
    row = await connection.fetchrow(
        f"""SELECT {_EXCEPTION_COLUMNS} FROM ledger.reconciliation_exceptions x
             LEFT JOIN ledger.reconciliation_adjustments a ON a.exception_id = x.id WHERE x.id = $1""",
        exception_id,
    )
    return None if row is None else _exception_view(row)


async def list_exceptions(
    connection: asyncpg.Connection,
    *,
    processor: str | None = None,
    status: ExceptionStatus | None = None,
    limit: int = 500,
) -> list[ExceptionView]:
    rows = await connection.fetch(
        f"""SELECT {_EXCEPTION_COLUMNS} FROM ledger.reconciliation_exceptions x
             LEFT JOIN ledger.reconciliation_adjustments a ON a.exception_id = x.id
            WHERE ($1::text IS NULL OR x.processor = $1)
              AND ($2::text IS NULL
                   OR ($2 = 'resolved' AND a.id IS NOT NULL)
                   OR ($2 = 'open' AND a.id IS NULL AND x.cleared_run_id IS NULL)
                   OR ($2 = 'cleared' AND a.id IS NULL AND x.cleared_run_id IS NOT NULL))
            ORDER BY x.occurred_at DESC, x.id DESC LIMIT $3""",
        processor,
        status.value if status else None,
        limit,
    )
    return [_exception_view(row) for row in rows]


_RUN_COLUMNS = """r.id, r.processor, r.window_from, r.window_to, r.slack_s, r.requested_by, r.started_at,
       r.finished_at, r.matched, r.exception_count, r.summary::text AS summary, r.result_digest,
       (SELECT max(p.id) FROM ledger.reconciliation_runs p
         WHERE p.processor = r.processor AND p.window_from = r.window_from AND p.window_to = r.window_to
           AND p.result_digest = r.result_digest AND p.id < r.id) AS same_result_as"""


async def run_view(connection: asyncpg.Connection, run_id: int) -> RunView | None:
    row = await connection.fetchrow(f"SELECT {_RUN_COLUMNS} FROM ledger.reconciliation_runs r WHERE r.id = $1", run_id)
    if row is None:
        return None
    exceptions = await connection.fetch(
        f"""SELECT {_EXCEPTION_COLUMNS} FROM ledger.reconciliation_run_exceptions re
             JOIN ledger.reconciliation_exceptions x ON x.id = re.exception_id
             LEFT JOIN ledger.reconciliation_adjustments a ON a.exception_id = x.id
            WHERE re.run_id = $1 ORDER BY x.occurred_at, x.id""",
        run_id,
    )
    return _run_view(row, [_exception_view(x) for x in exceptions])


def _run_view(row: asyncpg.Record, exceptions: list[ExceptionView]) -> RunView:
    return RunView(
        row["id"],
        row["processor"],
        row["window_from"],
        row["window_to"],
        row["slack_s"],
        row["requested_by"],
        row["started_at"],
        row["finished_at"],
        row["matched"],
        row["exception_count"],
        _json(row["summary"]),
        row["result_digest"],
        row["same_result_as"],
        exceptions,
    )


async def list_runs(connection: asyncpg.Connection, *, processor: str | None = None, limit: int = 50) -> list[RunView]:
    """Newest first, without their exceptions."""
    rows = await connection.fetch(
        f"""SELECT {_RUN_COLUMNS} FROM ledger.reconciliation_runs r
             WHERE ($1::text IS NULL OR r.processor = $1) ORDER BY r.id DESC LIMIT $2""",
        processor,
        limit,
    )
    return [_run_view(row, []) for row in rows]


async def latest_run(connection: asyncpg.Connection) -> RunView | None:
    run_id = await connection.fetchval("SELECT max(id) FROM ledger.reconciliation_runs")
    return None if run_id is None else await run_view(connection, run_id)


async def open_exception_count(connection: asyncpg.Connection) -> int:
    count: int = await connection.fetchval(
        """SELECT count(*) FROM ledger.reconciliation_exceptions x
            WHERE x.cleared_run_id IS NULL
              AND NOT EXISTS (SELECT 1 FROM ledger.reconciliation_adjustments a WHERE a.exception_id = x.id)"""
    )
    return count
