"""Fees: what a processor charges us, booked as money in the currency it was charged in, and exactly once.

A fee is :class:`~ledger.money.Money` end to end. Stripe reports a charge's fee on its balance transaction, in the
balance's (settlement) currency, which need not be the charge's: a EUR donation paid into a USD balance has its fee
in USD. Each fee is therefore its own entry, balanced in its own currency, never mixed into the charge's::

    don_1        debit clearing:stripe:EUR  5000   credit contributions:demo   5000
    fee:don_1    debit fees:stripe:USD       175   credit clearing:stripe:USD   175

The two accounts a fee needs (fee expense and processor clearing, in the fee's currency) are opened on demand
(:func:`engine.chart_of_accounts.ensure_fee_accounts`). Entries on accounts opened in the current transaction are
posted through a directory of their own: the shared :class:`~ledger.accounts.AccountDirectory` caches accounts for
the life of the process and must never learn an account that a rolled-back transaction takes away again; it learns
it in a later transaction, once it is committed.

Late fees. A charge can settle before its fee is known (Stripe creates the balance transaction later, or the
adapter could not read it): the donation then keeps ``fee_minor`` NULL, which means "not reported yet", not zero.
The fee is booked later, exactly once, by whichever of these sees it first:

- a later event carrying it: ``charge.updated`` with its balance transaction (``EventType.CHARGE_UPDATED``), or a
  ``payment_intent.succeeded`` / lookup that arrives after the donation settled (see
  :func:`engine.pipeline.settlement.commit_settlements`);
- the balance-transaction sweep, :func:`book_fees_from_balance_transactions`, which reads the processor's balance
  transactions (the same data reconciliation reads) for a window and books every fee still unknown. Webhooks are not
  expanded, so a real ``charge.updated`` usually names its balance transaction without its fee: the sweep is what
  guarantees the fee arrives; events only make it arrive sooner.

Exactly once rests on two guards: the donation row is claimed with ``UPDATE … WHERE fee_minor IS NULL`` (a second
delivery, a concurrent sweep or a racing settlement finds the fee already recorded and does nothing), and the entry's
reference ``fee:<donation>`` is unique in the ledger. A fee reported while the donation is still pending is kept on
the row and booked by the settlement that makes it succeed; no fee is booked for a declined or failed donation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import asyncpg

from adapters.base import BalanceTransactionType, Processor
from engine import chart_of_accounts
from ledger.accounts import AccountDirectory
from ledger.entries import EntryRequest, transfer
from ledger.money import Money
from ledger.posting import post_entries_or_raise

_logger = logging.getLogger(__name__)

# Donations whose fee may still be recorded: open ones keep it for their settlement, succeeded ones book it now.
_FEE_ACCEPTING_STATUSES = ["queued", "charging", "pending", "succeeded"]


@dataclass(frozen=True, slots=True)
class Fee:
    """One fee to book: its own entry, in its own currency."""

    reference: str  # the ledger reference: fee:<donation>, dispute-fee:<dispute>
    processor: str
    money: Money
    memo: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def accounts(self) -> tuple[str, str]:
        currency = self.money.currency
        return chart_of_accounts.fees(self.processor, currency), chart_of_accounts.clearing(self.processor, currency)

    def entry(self) -> EntryRequest:
        expense, clearing = self.accounts
        return transfer(
            self.reference, debit=expense, credit=clearing, money=self.money, memo=self.memo, metadata=self.metadata
        )


def donation_fee(row: asyncpg.Record | Mapping[str, object]) -> Fee | None:
    """The fee entry of a donation row (id, processor, fee_minor, fee_currency); None when unknown or zero."""
    fee_minor, fee_currency = row["fee_minor"], row["fee_currency"]
    if not fee_minor:
        return None
    if not isinstance(fee_minor, int) or not isinstance(fee_currency, str):
        raise ValueError(f"donation {row['id']} has a fee without a currency")
    donation = str(row["id"])
    return Fee(
        f"fee:{donation}",
        str(row["processor"]),
        Money(fee_minor, fee_currency.strip()),
        "processing fee",
        {"donation": donation},
    )


async def post_with_fees(
    connection: asyncpg.Connection,
    directory: AccountDirectory,
    entries: Sequence[EntryRequest],
    fees: Sequence[Fee],
) -> None:
    """Post ``entries`` and one entry per fee, opening the fees' accounts where they do not exist yet.

    Call it once per transaction, before anything else in it opens accounts: the shared directory's read here must
    see committed accounts only.
    """
    fees = [fee for fee in fees if fee.money.amount_minor > 0]
    wanted = {code for fee in fees for code in fee.accounts}
    known = await directory.load(connection, wanted) if wanted else {}
    ready: list[EntryRequest] = []
    opened: list[EntryRequest] = []
    for fee in fees:
        if all(code in known for code in fee.accounts):
            ready.append(fee.entry())
        else:
            await chart_of_accounts.ensure_fee_accounts(connection, fee.processor, fee.money.currency)
            opened.append(fee.entry())
    if entries or ready:
        await post_entries_or_raise(connection, directory, [*entries, *ready])
    if opened:
        await post_entries_or_raise(connection, AccountDirectory(), opened)


async def claim_late_fees(connection: asyncpg.Connection, fees: Sequence[tuple[str, Money]]) -> list[asyncpg.Record]:
    """Record each (donation, fee) on a donation whose fee is still unknown; the rows this call recorded.

    A row comes back once at most: a duplicate, a concurrent claim or a fee known already finds ``fee_minor`` set.
    """
    if not fees:
        return []
    return await connection.fetch(
        """UPDATE surge.donations d
              SET fee_minor = f.fee_minor, fee_currency = f.fee_currency, updated_at = now()
             FROM (SELECT DISTINCT ON (id) id, fee_minor, fee_currency
                     FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(id, fee_minor, fee_currency)
                    ORDER BY id) AS f
            WHERE d.id = f.id AND d.fee_minor IS NULL AND d.status = ANY($4::text[])
        RETURNING d.id, d.status, d.processor, d.fee_minor, d.fee_currency""",
        [donation for donation, _ in fees],
        [fee.amount_minor for _, fee in fees],
        [fee.currency for _, fee in fees],
        _FEE_ACCEPTING_STATUSES,
    )


def booked_fees(claimed: Sequence[asyncpg.Record]) -> list[Fee]:
    """The fees to book now among claimed rows: those of succeeded donations (open ones book at settlement)."""
    return [fee for row in claimed if row["status"] == "succeeded" and (fee := donation_fee(row)) is not None]


class LateFeeOutcome(StrEnum):
    BOOKED = "booked"  # the donation had succeeded with its fee unknown: booked now
    RECORDED = "recorded"  # the donation is not settled yet: kept on it, booked by its settlement
    ALREADY_KNOWN = "already_known"  # recorded before: a duplicate delivery, or the charge carried it
    NOT_CHARGED = "not_charged"  # declined or failed: there is no fee to book
    UNKNOWN_DONATION = "unknown_donation"


async def record_late_fee(
    connection: asyncpg.Connection, directory: AccountDirectory, donation_id: str, fee: Money
) -> LateFeeOutcome:
    """Record a fee reported after the charge (inside the caller's transaction); books it when the donation
    succeeded. A second report of the same fee does nothing."""
    claimed = await claim_late_fees(connection, [(donation_id, fee)])
    if claimed:
        await post_with_fees(connection, directory, [], booked_fees(claimed))
        return LateFeeOutcome.BOOKED if claimed[0]["status"] == "succeeded" else LateFeeOutcome.RECORDED
    row = await connection.fetchrow(
        "SELECT status, fee_minor, fee_currency FROM surge.donations WHERE id = $1", donation_id
    )
    if row is None:
        return LateFeeOutcome.UNKNOWN_DONATION
    if row["fee_minor"] is None:
        return LateFeeOutcome.NOT_CHARGED
    known = Money(row["fee_minor"], row["fee_currency"].strip())
    if known != fee:
        _logger.warning("donation %s: fee reported as %s, %s recorded; reconciliation decides", donation_id, fee, known)
    return LateFeeOutcome.ALREADY_KNOWN


@dataclass(frozen=True, slots=True)
class FeeSweep:
    transactions: int  # charge balance transactions read that name a donation
    booked: int  # fees booked now
    recorded: int  # fees kept on donations not settled yet


async def book_fees_from_balance_transactions(
    pool: asyncpg.Pool,
    directory: AccountDirectory,
    processor: Processor,
    created_from: datetime,
    created_to: datetime,
) -> FeeSweep:
    """Book, once, every fee still unknown whose charge has a balance transaction in ``[created_from, created_to]``.

    Safe to run any number of times, concurrently with events and settlements: only fees still unknown are claimed.
    """
    transactions = await processor.balance_transactions(created_from, created_to)
    reported = [
        (transaction.donation_id, transaction.fee)
        for transaction in transactions
        if transaction.type is BalanceTransactionType.CHARGE and transaction.donation_id is not None
    ]
    async with pool.acquire() as connection, connection.transaction():
        claimed = await claim_late_fees(connection, [(donation, fee) for donation, fee in reported if donation])
        fees = booked_fees(claimed)
        await post_with_fees(connection, directory, [], fees)
    booked = sum(1 for row in claimed if row["status"] == "succeeded")
    return FeeSweep(len(reported), booked, len(claimed) - booked)
